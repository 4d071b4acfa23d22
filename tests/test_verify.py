"""`verify`: the tree's own MMU code executed natively, pristine vs rewrite / series steps.

Two kinds of tests:
- plumbing (farms, branch materialisation, per-step tallies, shrinking, sites,
  JSON, exit codes) with an engine injected by the test: a stand-in that runs
  the Python model and turns a marker in the tree's text into a BUG result.
  It checks that verify executes *the tree it is given* for every step;
- the real native engine (emulator.native) on the full 6.1 tree: one verify
  of the rewrite, corpus + 100,000 fuzz events, in the default suite; the
  series and 7.2 runs in the slow suite.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from emulator.machine import old_model
from refactor.cli.app import main
from refactor.rules import load_rules
from refactor.verify import VerifyError, verify_branch, verify_tree
from refactor.verify.sites import SiteMap, function_spans
from refactor.verify.trees import branch_variants

IDENT = ["-c", "user.name=A Maintainer", "-c", "user.email=am@example.com"]
MMU_H = """#ifndef MMU_H
#define MMU_H

static inline gpa_t kvm_translate_gpa(struct kvm_vcpu *vcpu, struct kvm_mmu *mmu, gpa_t gpa)
{
	if (mmu != &vcpu->arch.nested_mmu)
		return gpa;
	return translate_nested_gpa(vcpu, gpa);
}

#endif
"""


def git(repo, *args):
    return subprocess.run(["git", *IDENT, *args], cwd=repo, capture_output=True, text=True,
                          check=True).stdout


class FakeBuild:
    """Stand-in for emulator.native's NativeBuild: executes the Python model, except that a
    tree whose mmu.h says BUG_ON_EVERY_WALK crashes every translation with a BUG result
    naming that line, as the native engine reports a BUG_ON."""

    def __init__(self, tree: Path):
        self.tree = tree
        text = (tree / "arch/x86/kvm/mmu.h").read_text()
        self.bug_line = next((n for n, line in enumerate(text.splitlines(), 1)
                              if "BUG_ON_EVERY_WALK" in line), None)

    def model(self):
        model = old_model(load_rules())
        if self.bug_line is None:
            return model
        apply, line = model.apply, self.bug_line

        def buggy(ev):
            r = apply(ev)
            return {"bug": f"arch/x86/kvm/mmu.h:{line}: kernel BUG"} if ev["ev"] == "translate" else r
        model.apply = buggy
        return model


built: list[Path] = []


def fake_engine(tree: Path, *, cache_dir=None, progress=None):
    built.append(tree)
    if not (tree / "arch/x86/kvm/mmu.h").exists():
        raise VerifyError(f"{tree}: no .config")
    return FakeBuild(tree)


@pytest.fixture()
def series_repo(tmp_path, monkeypatch):
    monkeypatch.setenv("KVM_REFACTOR_CACHE", str(tmp_path / "cache"))
    repo = tmp_path / "linux"
    (repo / "arch/x86/kvm").mkdir(parents=True)
    (repo / "Makefile").write_text("all:\n")
    (repo / "arch/x86/kvm/mmu.h").write_text(MMU_H)
    (repo / "arch/x86/kvm/x86.c").write_text("int x;\n")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    git(repo, "checkout", "-qb", "series")
    steps = [("KVM: x86/mmu: rename the test", "mmu != &vcpu->arch.nested_mmu",
              "w != &vcpu->arch.nested_mmu"),
             ("KVM: x86/mmu: pass the walker", "w != &vcpu->arch.nested_mmu",
              "w != &vcpu->arch.gva_walk) /* BUG_ON_EVERY_WALK */ if (0"),
             ("KVM: x86: fix the nested test", "w != &vcpu->arch.gva_walk) /* BUG_ON_EVERY_WALK */ if (0",
              "!mmu_is_nested(vcpu) || w == &vcpu->arch.ngpa_walk")]
    for subject, old, new in steps:
        path = repo / "arch/x86/kvm/mmu.h"
        path.write_text(path.read_text().replace(old, new))
        git(repo, "commit", "-qam", subject)
    (repo / "arch/x86/kvm/x86.c").unlink()
    git(repo, "commit", "-qam", "KVM: x86: delete a file")
    git(repo, "checkout", "-q", "master" if "master" in git(repo, "branch") else "main")
    return repo


def test_branch_commits_are_materialised_as_farms_without_touching_the_checkout(series_repo):
    tree, sha, variants = branch_variants(series_repo, "HEAD", "series")
    assert tree == series_repo and [v.name for v in variants][0] == "KVM: x86/mmu: rename the test"
    assert len(variants) == 4 and variants[3].deleted == {"arch/x86/kvm/x86.c"}
    from refactor.verify.trees import materialise

    src = materialise(tree, variants[1], "t-step", variants)
    assert "BUG_ON_EVERY_WALK" in (src / "arch/x86/kvm/mmu.h").read_text()
    assert (src / "Makefile").is_symlink()
    src4 = materialise(tree, variants[3], "t-step", variants)
    assert src4 == src and not (src4 / "arch/x86/kvm/x86.c").exists()
    assert "BUG_ON" not in (src4 / "arch/x86/kvm/mmu.h").read_text()
    src1 = materialise(tree, variants[0], "t-step", variants)
    assert (src1 / "arch/x86/kvm/x86.c").read_text() == "int x;\n"
    # Every file some step changes stays a real file (Kbuild compares times, not content).
    assert not (src1 / "arch/x86/kvm/x86.c").is_symlink()
    assert (series_repo / "arch/x86/kvm/x86.c").exists()
    assert "BUG_ON" not in (series_repo / "arch/x86/kvm/mmu.h").read_text()
    assert git(series_repo, "status", "--porcelain") == ""


def test_verify_branch_finds_the_step_that_crashes_and_its_site(series_repo, tmp_path):
    built.clear()
    report = verify_branch(series_repo, "HEAD", "series", names=None, events=3000, seed=3,
                           out_dir=tmp_path / "out", engine=fake_engine)
    # The pristine tree, then each of the four commits materialised in turn in one farm.
    assert len(built) == 5 and built[0] == series_repo and len(set(built[1:])) == 1
    counts = [(s.divergences, s.bugs) for s in report.steps]
    assert counts[0] == (0, 0) and counts[2] == (0, 0) and counts[3] == (0, 0)
    assert counts[1][0] > 0 and counts[1][1] == counts[1][0]
    step = report.steps[1]
    assert step.events == report.steps[0].events > 3000   # corpus + fuzz, the same events
    d = step.found[0]
    assert d.bug and "mmu.h" in d.result["bug"] and d.ev["ev"] == "translate"
    assert d.functions == ["kvm_translate_gpa"]
    assert d.sites and d.sites[0]["file"] == "arch/x86/kvm/mmu.h"
    assert "gva_walk" in d.sites[0]["new"]
    shrunk = Path(d.trace).read_text().splitlines()
    assert 1 <= d.trace_events == len(shrunk) <= 10  # a reset and a translation suffice
    data = report.as_dict()
    assert set(data) >= {"engine", "base", "steps", "divergences"} and data["engine"] == "native"
    assert set(data["steps"][0]) >= {"name", "commit", "events", "translations", "divergences",
                                     "bugs"}
    assert data["divergences"] == counts[1][0]
    json.dumps(data)


def test_fuzz_events_are_generated_once_for_every_engine(series_repo, tmp_path):
    a = verify_branch(series_repo, "HEAD", "series", names=None, events=2000, seed=5,
                      out_dir=tmp_path, engine=fake_engine)
    assert len({s.events for s in a.steps}) == 1
    assert a.steps[0].translations == a.steps[2].translations > 0


def test_verify_never_falls_back_to_the_python_model(series_repo, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_native(name, *args, **kw):
        if name == "emulator.native" or name.startswith("emulator.native."):
            raise ImportError("No module named 'emulator.native'")
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_native)
    with pytest.raises(VerifyError, match="native engine is not available"):
        verify_branch(series_repo, "HEAD", "series", names=None, events=10)


@pytest.mark.parametrize("args,message", [
    (["/nonexistent/tree"], "no such directory"),
    (["{repo}", "--branch", "nope"], "no branch 'nope'"),
    (["{repo}", "--branch", "series", "--base", "series"], "no commits on top of"),
])
def test_bad_input_is_one_line_and_exit_2(series_repo, args, message):
    args = [a.replace("{repo}", str(series_repo)) for a in args]
    result = CliRunner().invoke(main, ["verify", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_tree_that_is_not_a_kernel_tree_is_bad_input(tmp_path):
    with pytest.raises(VerifyError, match="not a full kernel tree"):
        verify_tree(tmp_path, events=0, engine=fake_engine)


def test_function_spans_name_kernel_definitions_and_fname():
    src = (b"static int FNAME(walk_addr_generic)(struct guest_walker *walker,\n"
           b"\t\t\t\t    struct kvm_vcpu *vcpu)\n{\n\treturn 0;\n}\n\n"
           b"static inline gpa_t kvm_translate_gpa(struct kvm_vcpu *vcpu)\n{\n\tif (x) {\n"
           b"\t\treturn 1;\n\t}\n\treturn 0;\n}\n")
    spans = function_spans(src)
    assert [(s.name, s.first, s.last) for s in spans] == [
        ("FNAME(walk_addr_generic)", 1, 5), ("kvm_translate_gpa", 7, 13)]
    sm = SiteMap({"a/mmu.h": src}, {"a/mmu.h": src.replace(b"return 1", b"return 2")})
    assert sm.locate("a/mmu.h:10: kernel BUG") == ["kvm_translate_gpa"]
    assert sm.sites(["kvm_translate_gpa"])[0]["line"] == 10


def test_two_edits_of_one_line_outside_any_function_are_one_site(trees):
    """6.1's paging_tmpl.h renames both `mmu`s of a PT_HAVE_ACCESSED_DIRTY() definition: two
    edits with the same line, text and rule, in no function the SiteMap can name.  The
    verify output listed that site twice."""
    from refactor.plan.edits import Edit
    from refactor.plan.rewrite import Plan

    rel = "arch/x86/kvm/mmu/paging_tmpl.h"
    old = (trees["6.1"] / rel).read_bytes()
    macro = b"#define PT_HAVE_ACCESSED_DIRTY(mmu) (!(mmu)->cpu_role.base.ad_disabled)"
    at = old.index(macro)
    edits = [Edit.span(rel, old, at + i, at + i + 3, "w", "macro-param-walker")
             for i in (macro.index(b"(mmu)") + 1, macro.index(b"(mmu)->") + 1)]
    new = old.replace(macro, macro.replace(b"mmu", b"w"))
    plan = Plan(trees["6.1"], None, "old", edits=edits, results={rel: new}, originals={rel: old})
    sm = SiteMap({rel: new}, {rel: old}, plan)
    line = old.count(b"\n", 0, at) + 1
    assert [(s["line"], s["function"], s["new"]) for s in sm.by_function[""]] == [(line, None, "w")]
    # Edits of one line that differ stay apart.
    plan.edits[1] = Edit.span(rel, old, edits[1].start, edits[1].end, "walker", "macro-param-walker")
    assert len(SiteMap({rel: new}, {rel: old}, plan).by_function[""]) == 2


def test_a_bug_in_an_untouched_file_points_at_the_rewritten_caller(tmp_path):
    """A BUG_ON in a callee the variant left alone (translate_nested_gpa() in x86.c) names
    the rewritten caller in another file (kvm_translate_gpa() in mmu.h) and its site: the
    native 6.1 run of the issue's step-6 test used to name no function at all."""
    old = (b"static inline gpa_t kvm_translate_gpa(struct kvm_vcpu *vcpu, struct kvm_mmu *mmu)\n"
           b"{\n\tif (mmu != &vcpu->arch.nested_mmu)\n\t\treturn gpa;\n"
           b"\treturn translate_nested_gpa(vcpu, gpa);\n}\n")
    new = old.replace(b"mmu != &vcpu->arch.nested_mmu", b"w != &vcpu->arch.gva_walk")
    x86 = (b"int x;\n\ngpa_t translate_nested_gpa(struct kvm_vcpu *vcpu, gpa_t gpa)\n{\n"
           b"\tBUG_ON(!mmu_is_nested(vcpu));\n\treturn gpa;\n}\n")
    (tmp_path / "arch/x86/kvm").mkdir(parents=True)
    (tmp_path / "arch/x86/kvm/x86.c").write_bytes(x86)
    files, originals = {"arch/x86/kvm/mmu.h": new}, {"arch/x86/kvm/mmu.h": old}
    result = '{"bug": "arch/x86/kvm/x86.c:5: BUG"}'
    assert SiteMap(files, originals).locate(result) == []
    sm = SiteMap(files, originals, root=tmp_path)
    located = sm.locate(result)
    assert located == ["translate_nested_gpa"]
    assert sm.with_neighbours(located) == ["translate_nested_gpa", "kvm_translate_gpa"]
    assert [s["line"] for s in sm.sites(sm.with_neighbours(located))] == [3]


# -- the native engine on real trees ----------------------------------------------------------

def _full_tree(version: str) -> Path:
    from test_build import full_tree

    return full_tree(version)


@pytest.fixture()
def _persistent_cache(monkeypatch):
    # Engine builds, plans and farms are kept between runs (content-keyed caches).
    monkeypatch.setenv("KVM_REFACTOR_CACHE", str(Path.home() / ".cache" / "kvm-refactor"))


def test_native_verify_of_the_61_rewrite(_persistent_cache, tmp_path):
    """CI's one native run: the 6.1 rewrite against 6.1 on the corpus + 100,000 fuzz events."""
    report = verify_tree(_full_tree("6.1"), "upstream", seed=1, events=100_000,
                         out_dir=tmp_path)
    step = report.steps[0]
    assert report.base_bugs == []
    assert step.events >= 100_000 and step.translations > 30_000
    assert (step.divergences, step.bugs) == (0, 0), report.text()


@pytest.mark.slow
@pytest.mark.parametrize("version", ["6.1", "7.2"])
def test_native_verify_of_final_rewrites_200k(_persistent_cache, tmp_path, version):
    report = verify_tree(_full_tree(version), "upstream", seed=7, events=200_000,
                         out_dir=tmp_path)
    step = report.steps[0]
    assert report.base_bugs == []
    assert step.events >= 200_000
    assert (step.divergences, step.bugs) == (0, 0), report.text()


def _nested_tdp_in(events) -> set[str]:
    return {ev["vendor"] for ev in events if ev["ev"] == "nested_entry" and ev.get("tdp")}


def test_the_fuzz_stream_enters_l2_under_nested_ept_and_npt():
    from emulator.fuzz import random_events

    assert _nested_tdp_in(random_events(1, 20_000)) == {"vmx", "svm"}


def test_fidelity_classes_name_what_differs():
    from refactor.verify.fidelity import classify

    ev = {"ev": "translate", "addr": 0, "access": "write"}
    a = {"fault": {"error_code": 3, "address": 0}, "ad": [(1, 32)]}
    b = {"fault": {"error_code": 7, "address": 0}, "ad": [(1, 32)]}
    assert classify(ev, a, b) == "translate/write: fault.error_code"
    assert classify(ev, a, {"bug": "x.c:1: BUG"}) == "translate/write: native bug"
    assert classify({"ev": "cr3", "val": 0}, {"ok": True}, {"ok": True, "ad": []}) == "cr3: ad"


def test_a_reused_farm_never_relinks_a_file_older_than_the_last_build(tmp_path, monkeypatch):
    """Kbuild compares times: a file that goes back to the base content in a reused farm
    must be rewritten (new time), not relinked to the older original."""
    import os
    import time

    from refactor.verify.trees import make_farm

    monkeypatch.setenv("KVM_REFACTOR_CACHE", str(tmp_path / "cache"))
    base = tmp_path / "base"
    (base / "d").mkdir(parents=True)
    (base / "d/a.c").write_text("base\n")
    os.utime(base / "d/a.c", (1, 1))
    farm = make_farm(base, "m", {"d/a.c": b"mutant A\n"})
    first = (farm / "d/a.c").stat().st_mtime
    time.sleep(0.01)
    make_farm(base, "m", {})          # the next tree leaves a.c as in the base
    assert not (farm / "d/a.c").is_symlink()
    assert (farm / "d/a.c").read_text() == "base\n"
    assert (farm / "d/a.c").stat().st_mtime >= first


def test_an_event_that_never_returns_is_a_hang_bug():
    import threading

    from refactor.verify.run import _apply_watched

    class Stuck:
        def __init__(self):
            self.closed = threading.Event()

        def apply(self, ev):
            if not self.closed.wait(10):
                return {"ok": True}
            raise RuntimeError("engine exited")

        def close(self):
            self.closed.set()

    assert _apply_watched(Stuck(), {"ev": "translate"}, timeout=0.2)["bug"].startswith("hang:")


def test_an_episode_stops_being_compared_after_a_failed_vm_entry():
    from refactor.verify.run import Stream, run_streams

    class M:
        def __init__(self, after):
            self.after, self.translations = after, 0

        def apply(self, ev):
            if ev["ev"] == "nested_entry":
                return {"ok": True, "pdptrs": False}
            return self.after if ev["ev"] == "translate" else {"ok": True}

    events = [("t:1", {"ev": "reset"}), ("t:2", {"ev": "nested_entry"}),
              ("t:3", {"ev": "translate"}), ("t:4", {"ev": "reset"}),
              ("t:5", {"ev": "translate"})]
    _, tallies, _ = run_streams([Stream("t", iter(events))], M({"gpa": 1}), {"c": M({"gpa": 2})})
    assert tallies["c"].divergences == 1 and tallies["c"].found[0].source == "t:5"


def test_the_fuzz_stream_ends_an_episode_at_a_failed_pdpte_load():
    """KVM fails a VM-entry whose PAE PDPTEs cannot be loaded: L2 never runs from there, so
    the generator starts a new episode (it predicts the load from its own writes)."""
    from emulator.fuzz import random_events

    rules = load_rules()
    model, prev, failed, entries = None, None, 0, 0
    for ev in random_events(1, 60_000):
        if ev["ev"] == "reset":
            model = old_model(rules)
        else:
            assert prev is None, f"{ev} follows a failed PDPTE load at {prev}"
        r = model.apply(ev)
        prev = ev if ev["ev"] == "nested_entry" and r.get("pdptrs") is False else None
        failed += prev is not None
        entries += ev["ev"] == "nested_entry"
    assert failed >= 1 and entries > 500


def test_a_fidelity_example_shrinks_to_a_difference_of_its_own_class(tmp_path):
    """The shrinker keeps a cut only if its first difference has the original's class; any
    difference would let a frequent class (a fault address...) stand for a rare one."""
    from refactor.verify.fidelity import classify
    from refactor.verify.run import Found, shrink_found

    class Ref:
        translations, translate_time = 0, 0.0

        def apply(self, ev):
            return {"ok": True} if ev["ev"] != "translate" else {"gpa": 0}

    class Cand(Ref):
        def __init__(self):
            self.rsvd = False

        def apply(self, ev):
            if ev["ev"] == "cr4":
                self.rsvd = True
            if ev["ev"] == "translate":
                return {"fault": {"error_code": 9}} if self.rsvd else {"gpa": 0, "ad": [(1, 32)]}
            return {"ok": True}

    episode = [{"ev": "reset"}, {"ev": "translate", "addr": 1, "access": "read"},
               {"ev": "cr0", "val": 1}, {"ev": "cr4", "val": 16},
               {"ev": "translate", "addr": 2, "access": "read"}]
    f = Found("t", 5, episode[-1], {"gpa": 0}, {"fault": {"error_code": 9}}, episode)
    path, n = shrink_found(f, Ref, Cand, tmp_path / "x.jsonl", 5.0, classify)
    kept = [json.loads(line) for line in path.read_text().splitlines()]
    assert [e["ev"] for e in kept] == ["reset", "cr4", "translate"]
    plain, _ = shrink_found(f, Ref, Cand, tmp_path / "y.jsonl", 5.0)
    assert [json.loads(line)["ev"] for line in plain.read_text().splitlines()] == ["reset", "translate"]


class StubModel:
    """The Python model, except that every translation reaches a trapping stub."""

    def __init__(self):
        self.model = old_model(load_rules())
        self.translations = 0

    def apply(self, ev):
        if ev["ev"] == "translate":
            return {"bug": "stub __sw_hweight64 called", "stub": True}
        return self.model.apply(ev)


class StubBuild(FakeBuild):
    def model(self):
        return StubModel()


def stub_engine(tree: Path, *, cache_dir=None, progress=None):
    return StubBuild(tree)


def _one_line_exit_2(result, message):
    """Exit 2 and one error line (after verify's progress lines on stderr), no traceback."""
    assert result.exit_code == 2, result.output
    errors = [ln for ln in result.output.splitlines() if not ln.startswith("verify: ")]
    assert len(errors) == 1 and message in errors[0], result.output
    assert "Traceback" not in result.output


def test_a_tree_configured_in_place_is_one_line_and_exit_2(series_repo):
    (series_repo / "arch/x86/kvm/mmu").mkdir()
    (series_repo / "arch/x86/kvm/mmu/mmu.c").write_text("int y;\n")
    (series_repo / "scripts").mkdir()
    (series_repo / ".config").write_text("CONFIG_KVM=y\n")
    result = CliRunner().invoke(main, ["verify", str(series_repo), "--branch", "series",
                                       "--events", "10"])
    _one_line_exit_2(result, "configured in place")


def test_an_engine_that_cannot_be_built_is_one_line_and_exit_2(series_repo, monkeypatch):
    import refactor.verify.check as check
    from emulator.native import EngineError

    def broken(tree, *, cache_dir=None, progress=None):
        raise EngineError("cannot compile arch/x86/kvm/mmu/mmu.c: mmu.c:12: error: boom\nmore")
    monkeypatch.setattr(check, "_engine", lambda: (broken, EngineError))
    result = CliRunner().invoke(main, ["verify", str(series_repo), "--branch", "series",
                                       "--events", "10"])
    _one_line_exit_2(result, "mmu.c:12: error: boom")


def test_a_stub_reached_by_the_pristine_tree_is_one_line_and_exit_2(series_repo, monkeypatch):
    """A path the engine does not provide makes the run incomplete: never a pass."""
    import refactor.verify.check as check

    monkeypatch.setattr(check, "_engine", lambda: (stub_engine, VerifyError))
    result = CliRunner().invoke(main, ["verify", str(series_repo), "--branch", "series",
                                       "--events", "10"])
    # The report is printed (results kept), then one error line; exit 2, not a pass.
    assert result.exit_code == 2 and "Traceback" not in result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("kvm-refactor: error:") and "incomplete" in last
    assert "stub __sw_hweight64 called" in last

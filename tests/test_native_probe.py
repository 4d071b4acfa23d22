"""The probe variant of the native engine (which functions ran in an event) and the
engine's compile errors (no -w: an undeclared function fails the build).

Default: the mapping of probed names to rewrite sites (no engine), and a 6.1 farm whose
mmu.c calls an undeclared function (one unit preprocessed and compiled; the others come
from the engine the default suite builds).  Slow: the probe itself (a build of its own,
about 30 s cold) and a verify of a mutant on the 6.1 full tree.
"""
from __future__ import annotations

import gzip
import shutil
import time
import uuid
from pathlib import Path

import pytest

from emulator.native import EngineError, build_engine
from emulator.native.probe import trace_kvm_inlines
from emulator.trace import read_events
from refactor.verify.check import _functions
from refactor.verify.run import Found
from refactor.verify.sites import SiteMap

CORPUS = Path(__file__).resolve().parents[1] / "emulator" / "corpus"

TMPL = b"""#define FNAME(name) paging##64_##name
static int FNAME(walk_addr_generic)(struct guest_walker *walker)
{
	return w == &vcpu->arch.gva_walk;
}

static int unrelated(void)
{
	return 1;
}
"""


class Probed:
    """A model whose probe says what ran (as NativeModel.functions_run does)."""

    def __init__(self, names):
        self.names = names

    def functions_run(self, episode):
        return self.names


def _found() -> Found:
    ev = {"ev": "translate", "access": "read", "addr": 0x1000}
    return Found("corpus/x.jsonl:2", 1, ev, {"gpa": 4096}, {"gpa": 8192},
                 [{"ev": "reset"}, ev])


def test_probed_functions_name_the_rewrite_sites_they_hold_fname_included():
    rel = "arch/x86/kvm/mmu/paging_tmpl.h"
    new = TMPL.replace(b"w == &vcpu->arch.gva_walk", b"w == &vcpu->arch.ngpa_walk").replace(
        b"return 1;", b"return 2;")
    sites = SiteMap({rel: new}, {rel: TMPL})
    assert sites.functions() == ["FNAME(walk_addr_generic)", "unrelated"]
    # A plain divergence (another gpa, no BUG location): only what ran points anywhere.
    assert _functions(object(), _found(), sites) == []
    ran = Probed(["h_translate", "kvm_mmu_gva_to_gpa_read", "paging64_walk_addr_generic"])
    fns = _functions(ran, _found(), sites)
    assert fns == ["FNAME(walk_addr_generic)"]
    assert [s["line"] for s in sites.sites(fns)] == [4]
    # A probe that fails leaves the report as it was (coverage helps; it is no verdict).

    class Broken:
        def functions_run(self, episode):
            raise EngineError("no recipe")
    assert _functions(Broken(), _found(), sites) == []
    # A BUG's file:line already points: no probe (its build costs as much as an engine's).
    bug = _found()
    bug.result = {"bug": f"{rel}:4: BUG"}
    ran.names = ["unrelated"]
    assert _functions(ran, bug, sites) == ["FNAME(walk_addr_generic)"]


def test_the_probe_traces_kvm_inline_functions_only():
    text = ('# 1 "include/linux/jump_label.h"\n'
            "static inline __attribute__((no_instrument_function)) int a(void) { return 0; }\n"
            '# 10 "arch/x86/kvm/mmu.h"\n'
            "static inline __attribute__((no_instrument_function)) int b(void) { return 0; }\n"
            "static inline __attribute__((no_instrument_function)) "
            "__attribute__((__always_inline__)) int c(void) { return 0; }\n"
            '# 3 "/cache/kvm-refactor/native/prep/x/include/generated/g.h"\n'
            "static inline __attribute__((no_instrument_function)) int d(void) { return 0; }\n")
    out = trace_kvm_inlines(text).split("\n")
    assert out[0:2] == text.split("\n")[0:2]                   # not KVM's: stays notrace
    assert out[3] == "static inline  int b(void) { return 0; }"  # KVM's inline: traced
    assert "no_instrument_function" in out[4]                   # __always_inline: stays
    assert "no_instrument_function" in out[6]                   # generated header: stays
    assert len(out) == len(text.split("\n"))                    # same lines


def test_a_rewrite_that_calls_an_undeclared_function_does_not_build(engine_61, monkeypatch):
    """The engine used to compile with -w, which silences -Werror= too: such a call became
    a trapping stub at run time.  Now the build fails with the compiler's line."""
    from emulator.native.build import cache_root
    from refactor.kernel.build import farm

    # The persistent cache: its prepared 6.1 directory and objects (the session's own
    # cache would configure and prepare the tree cold, about 30 s).
    monkeypatch.setenv("KVM_REFACTOR_CACHE", str(Path.home() / ".cache" / "kvm-refactor"))
    tree = engine_61.tree
    token = uuid.uuid4().hex[:12]     # a new unit text every run: never a cache hit
    mmu = (tree / "arch/x86/kvm/mmu/mmu.c").read_text()
    head = "void kvm_mmu_invlpg(struct kvm_vcpu *vcpu, gva_t gva)\n{\n"
    assert head in mmu
    mmu = mmu.replace(head, head + f"\th_undeclared_{token}(vcpu);\n")
    line = mmu[:mmu.index(f"h_undeclared_{token}")].count("\n") + 1
    root = cache_root()
    started = time.time() - 1
    # The farm test_native_engine.py keeps (making one costs 30-40 s; farm() puts back
    # what an earlier use changed).
    changed = farm(tree, Path.home() / ".cache" / "kvm-refactor" / "native-test-farm",
                   {"arch/x86/kvm/mmu/mmu.c": mmu.encode()})
    try:
        with pytest.raises(EngineError) as err:
            build_engine(changed)
    finally:
        for unit in (root / "units").iterdir():
            text = unit / "unit.c.gz"
            if (text.exists() and text.stat().st_mtime >= started
                    and f"h_undeclared_{token}".encode() in gzip.decompress(text.read_bytes())):
                shutil.rmtree(unit, ignore_errors=True)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("cannot compile arch/x86/kvm/mmu/mmu.c: "
                              f"arch/x86/kvm/mmu/mmu.c:{line}: implicit declaration of "
                              f"function 'h_undeclared_{token}'"), message


# ---- slow: the probe builds ------------------------------------------------------------

@pytest.mark.slow
def test_functions_run_names_what_the_last_event_ran(engine_61):
    events = [ev for _line, ev in read_events(CORPUS / "ad_bits.jsonl")]
    first = next(i for i, ev in enumerate(events) if ev["ev"] == "translate")
    ran = engine_61.model().functions_run(events[:first + 1])
    # The 4-level walk and the inline helpers of KVM's headers it goes through.
    for name in ("kvm_mmu_gva_to_gpa_read", "paging64_walk_addr_generic", "kvm_translate_gpa",
                 "permission_fault"):
        assert name in ran, ran
    assert "nested_svm_init_mmu_context" not in ran    # ran at no point here
    assert "kvm_init_mmu" not in ran                   # ran at the reset, not in this event
    # A write of guest memory runs none of the tree's code.
    assert engine_61.model().functions_run(events[:2]) == []


@pytest.mark.slow
@pytest.mark.parametrize("version,name,events", [
    ("6.1", "nested-fault-test-ngpa", 0),     # an L2 #PF reported as nested (corpus)
    ("7.2", "mbec-call-wrong", 3000),         # an EPT violation where pristine translates
])
def test_a_plain_divergence_of_a_mutant_names_the_mutated_site(tmp_path, monkeypatch,
                                                               version, name, events):
    """Divergences without a BUG, so no file:line in any result: the sites come from
    the functions the probe saw run, and they include the line the mutant changed."""
    from refactor.index.indexer import build_index
    from refactor.plan.rewrite import plan_rewrite
    from refactor.rules import load_rules
    from refactor.verify import verify_tree
    from refactor.verify.mutants import MUTANTS, mutant_rules_dir
    from test_build import full_tree

    monkeypatch.setenv("KVM_REFACTOR_CACHE", str(Path.home() / ".cache" / "kvm-refactor"))
    tree = full_tree(version)
    mutant = next(m for m in MUTANTS if m.name == name)
    rules = load_rules(mutant_rules_dir(mutant, tmp_path / "rules"))
    correct = plan_rewrite(tree, "upstream", index=build_index(tree))
    wrong = plan_rewrite(tree, "upstream", rules, build_index(tree, rules))
    # The mutant's own edits: those of its plan that the correct plan does not make.
    def edits(plan):
        return {(e.file, e.line, e.new[:160]) for e in plan.edits + plan.post_edits}
    changed = edits(wrong) - edits(correct)
    assert changed
    report = verify_tree(tree, rules=rules, events=events, out_dir=tmp_path / "out")
    step = report.steps[0]
    assert step.divergences and not step.bugs
    for d in step.found:
        assert d.functions and d.sites, d.as_dict()
        hit = {(s["file"], s["line"], s["new"]) for s in d.sites} & changed
        assert hit, (sorted(changed), d.functions)

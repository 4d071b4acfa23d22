"""`port --verify`: the ported patch executed on the native engine next to the original.

The fix is written on the real 7.3 text (permission_fault(): EFLAGS.AC no
longer overrides SMAP, an observable permission change), backported onto the
full 7.2 tree, and executed there; the source side is 7.2's rewrite to the new
layout with the original patch (the 7.3 tree here is a subset the engine
cannot build).  A port edited to read the permissions of the wrong walker must
be reported as disagreeing.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from refactor.cli.app import main
from refactor.port.engine import port_patches
from refactor.port.mail import read_mails
from refactor import port_source_files, prove_port
from refactor.port.proof import PROBE_LINE, probe_files
from test_port import make_mail

MMU_H = "arch/x86/kvm/mmu.h"
OLD = "\tfault = (fmt->permissions[index] >> pte_access) & 1;\n"
NEW = "\tfault = (fmt->permissions[index & ~(PFERR_RSVD_MASK >> 1)] >> pte_access) & 1;\n"
PORTED = "mmu->permissions[index & ~(PFERR_RSVD_MASK >> 1)]"
# The classic wrong backport: the CPU's walker where the function is handed the one it walks.
WRONG = "vcpu->arch.walk_mmu->permissions[index & ~(PFERR_RSVD_MASK >> 1)]"


def smap_fix(trees) -> str:
    return make_mail(trees["7.3"], MMU_H, OLD, NEW, "KVM: x86/mmu: Let EFLAGS.AC never override SMAP")


def test_probe_sits_at_the_top_of_each_changed_function(trees):
    report = port_patches(read_mails(smap_fix(trees)), [trees["7.2"]])
    files = report.targets[0].changed
    assert PORTED in files[MMU_H].decode()
    originals = {MMU_H: (trees["7.2"] / MMU_H).read_bytes()}
    probes = probe_files(files, originals)
    assert probes.functions == ["permission_fault"] and probes.outside == []
    [(rel, line)] = probes.sites
    lines = probes.files[MMU_H].split(b"\n")
    assert rel == MMU_H and lines[line - 1] == PROBE_LINE
    assert lines[line - 2] == b"{" and b"permission_fault(" in b"\n".join(lines[line - 6:line - 2])
    # Nothing but the probe is added.
    assert probes.files[MMU_H].replace(PROBE_LINE + b"\n", b"") == files[MMU_H]
    # The engine's answer names the probe by file:line (the bug table's path).
    assert probes.hit(f'{{"bug":"{MMU_H}:{line}: WARN"}}'.encode()) == "permission_fault"
    assert probes.hit(f'{{"bug":"{MMU_H}:{line + 1}: WARN"}}'.encode()) is None
    assert probes.hit(b'{"val":3}') is None


def test_a_change_outside_functions_is_listed_not_probed(trees):
    rel = "arch/x86/include/asm/kvm_host.h"
    text = (trees["7.2"] / rel).read_text()
    old = "\tstruct kvm_mmu *walk_mmu;\n"
    assert text.count(old) == 1
    files = {rel: text.replace(old, old + "\tbool proof_test_member;\n").encode()}
    probes = probe_files(files, {rel: text.encode()})
    assert probes.functions == [] and probes.sites == {}
    assert [s["file"] for s in probes.outside] == [rel]


def test_cli_verify_on_a_tree_the_engine_cannot_build(trees, tmp_path):
    patch = tmp_path / "fix.patch"
    patch.write_text(smap_fix(trees))
    runner = CliRunner()
    res = runner.invoke(main, ["port", str(patch), "--onto", str(trees["7.2"]), "--verify",
                               "--format", "json"])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    [line] = [ln for ln in res.stderr.splitlines() if "native proof" in ln]
    assert line.startswith("port: native proof of 7.2.13: not run: ") and "full" in line
    data = json.loads(res.stdout)
    assert "error" in data["targets"][0]["verify"]
    res = runner.invoke(main, ["port", str(patch), "--onto", str(trees["7.2"]),
                               "--source", str(trees["7.3"])])
    assert res.exit_code == 2 and "needs --verify" in res.output
    # A target where the patch conflicts (6.1: a WARN_ON between the context lines) is not
    # executed: nothing complete to run; the exit status is the conflict's.
    res = runner.invoke(main, ["port", str(patch), "--onto", str(trees["6.1"]), "--verify",
                               "--format", "json"])
    assert res.exit_code == 1, res.output
    assert json.loads(res.stdout)["targets"][0]["verify"] == {
        "skipped": "some patches conflict: nothing complete to execute"}
    assert "port: native proof of 6.1" in res.stderr and "skipped" in res.stderr


@pytest.fixture
def persistent_cache(monkeypatch):
    # Engines and farms in the persistent cache: built cold they take minutes each.
    monkeypatch.setenv("KVM_REFACTOR_CACHE", str(Path.home() / ".cache" / "kvm-refactor"))


@pytest.mark.slow
def test_backport_proof_on_72_agrees_and_a_wrong_port_disagrees(trees, persistent_cache, tmp_path):
    """Five native builds of 7.2 (about 90 s each cold here: mmu.h recompiles every unit)."""
    from refactor.verify.trees import rewrite_variant
    from test_build import full_tree

    t72 = full_tree("7.2")
    source = rewrite_variant(t72).src          # 7.2 in the new layout, as 7.3 writes it
    mails = read_mails(smap_fix(trees))
    report = port_patches(mails, [t72])
    tr = report.targets[0]
    assert tr.patches[0].result == "ported" and tr.patches[0].direction == "backport"
    src_files = port_source_files(mails, source)
    assert list(src_files) == [MMU_H]

    good = prove_port(t72, tr.changed, source, src_files, seed=1, events=20_000)
    assert good.verdict == "agree", good.text()
    assert good.divergences == 0 and good.bases_differ == 0
    assert good.functions == ["permission_fault"]
    assert 0 < good.reached < good.events
    assert good.reached_by_function == {"permission_fault": good.reached}
    # The patch's effect is real, and the same on both trees.
    assert good.effect_target and good.effect_target == good.effect_source
    assert good.effect_reached == len(good.effect_target)   # every changed event ran the fix
    ex = good.effect_examples[0]
    assert ex["unpatched"] != ex["patched"] and ex["on_target"] and ex["on_source"]

    wrong = dict(tr.changed)
    text = wrong[MMU_H].decode()
    assert text.count(PORTED) == 1
    wrong[MMU_H] = text.replace(PORTED, WRONG).encode()
    bad = prove_port(t72, wrong, source, src_files, seed=1, events=20_000)
    assert bad.verdict == "disagree", bad.text()
    assert bad.divergences > 0 and bad.found
    assert bad.reached == good.reached     # the same events reach the same function

    # The CLI: the same proof as the JSON contract's per-target `verify` object, exit 0.
    patch = tmp_path / "fix.patch"
    patch.write_text(smap_fix(trees))
    res = CliRunner().invoke(main, ["port", str(patch), "--onto", str(t72), "--verify", "--source",
                                    str(source), "--events", "2000", "--format", "json"])
    assert res.exit_code == 0, res.output
    v = json.loads(res.stdout)["targets"][0]["verify"]
    assert v["verdict"] == "agree" and v["agree"] is True and v["divergences"] == 0
    assert v["reached"] > 0 and v["events"] > 2000 and v["effect"]["same"] is True
    assert "verdict: AGREE" in res.stderr


@pytest.mark.slow
def test_a_proof_that_never_reaches_the_changed_code_is_not_a_pass(trees, persistent_cache, tmp_path):
    """kvm_mmu_page_fault() handles the guest's hardware page faults; the traces translate
    through the walkers and never execute it.  Two native builds (mmu.c alone)."""
    from test_build import full_tree

    t72 = full_tree("7.2")
    old = "\tr = RET_PF_INVALID;\n"
    new = old + "\tif (!VALID_PAGE(vcpu->arch.mmu->root.hpa))\n\t\treturn RET_PF_RETRY;\n"
    patch = tmp_path / "fix.patch"
    patch.write_text(make_mail(trees["7.3"], "arch/x86/kvm/mmu/mmu.c", old, new,
                               "KVM: x86/mmu: Recheck the root before handling a fault"))
    res = CliRunner().invoke(main, ["port", str(patch), "--onto", str(t72), "--verify",
                                    "--events", "2000", "--format", "json"])
    assert res.exit_code == 1, res.output
    v = json.loads(res.stdout)["targets"][0]["verify"]
    assert v["functions"] == ["kvm_mmu_page_fault"]
    assert v["reached"] == 0 and v["verdict"] == "unreached" and v["agree"] is None
    assert v["effect"]["target"] == 0
    assert "verdict: UNREACHED" in res.stderr


@pytest.mark.slow
def test_cross_version_differences_of_the_trees_are_not_the_ports(persistent_cache, tmp_path):
    """A fix written on 6.1's load_pdptrs() (x86.c) ported onto 7.2 (regs.c, `relocated`),
    6.1 itself as the source: the two kernels differ by themselves on some events (EPT
    exit qualifications, the EPT error code, docs/native-engine.md); those are not the
    port's divergences.  Three builds of one unit each."""
    from test_build import full_tree

    t61, t72 = full_tree("6.1"), full_tree("7.2")
    patch = tmp_path / "fix.patch"
    patch.write_text(make_mail(t61, "arch/x86/kvm/x86.c", "\tif (ret < 0)\n\t\treturn 0;\n\n\tfor (i",
                               "\tif (ret < 0 || !cr3)\n\t\treturn 0;\n\n\tfor (i",
                               "KVM: x86: Fail a PDPTE load from CR3 0"))
    res = CliRunner().invoke(main, ["port", str(patch), "--onto", str(t72), "--verify", "--source",
                                    str(t61), "--format", "json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)["targets"][0]
    assert [h["status"] for h in data["patches"][0]["hunks"]] == ["relocated"]
    v = data["verify"]
    assert v["functions"] == ["load_pdptrs"] and v["reached"] > 0
    assert v["bases_differ"] > 0 and v["explained_by_bases"] == v["bases_differ"]
    assert v["divergences"] == 0 and v["verdict"] == "agree"
    # The fix never fires on these events (no PAE CR3 of 0): the report says what that means.
    assert v["effect"] == dict(v["effect"], target=0, source=0, same=True)
    assert "changes no result on these events" in res.stderr


@pytest.mark.slow
def test_a_patch_the_layouts_execute_differently_is_reported(trees, persistent_cache):
    """A 7.3 patch marking every fault of L2's own walk nested ports onto 7.2 word for word
    (`walk-mmu-compare`), but the layouts then inject differently: without nested TDP
    7.2 takes vcpu->arch.mmu's hook (a #PF into L2), the new layout the nested walker's,
    which is NULL there (a host crash).  Only a bug on the source side, seen with the
    patched target as the reference, shows it.  Three builds of mmu.c."""
    from refactor.verify.trees import rewrite_variant
    from test_build import full_tree

    t72 = full_tree("7.2")
    source = rewrite_variant(t72).src
    rel = "arch/x86/kvm/mmu/paging_tmpl.h"
    old = "\twalker->fault.nested_page_fault = w != &vcpu->arch.gva_walk;\n"
    new = "\twalker->fault.nested_page_fault = w != &vcpu->arch.gva_walk || is_guest_mode(vcpu);\n"
    mails = read_mails(make_mail(trees["7.3"], rel, old, new, "KVM: x86/mmu: Mark L2 walk faults nested"))
    tr = port_patches(mails, [t72]).targets[0]
    assert tr.patches[0].result == "ported"
    assert "mmu != vcpu->arch.walk_mmu || is_guest_mode(vcpu);" in tr.changed[rel].decode()
    proof = prove_port(t72, tr.changed, source, port_source_files(mails, source), events=5_000)
    assert proof.functions == ["FNAME(walk_addr_generic)"] and proof.reached > 0
    assert proof.verdict == "disagree" and proof.divergences > 0 and proof.effect_mismatch > 0
    first = proof.found[0]
    assert "NULL function pointer" in first["expected"]["bug"]
    assert first["result"]["fault"]["to"] == "L2" and first["result"]["fault"]["nested"] is True


@pytest.mark.parametrize("flag", ["--build", "--verify"])
def test_build_and_verify_refuse_a_target_with_local_changes(tmp_path, flag):
    """A git target is ported at HEAD, but --build and --verify compile the files on disk:
    with tracked changes they would test code the port never read."""
    import shutil
    import subprocess

    tree = tmp_path / "tree"
    shutil.copytree(Path(__file__).parent.parent / "fixtures" / "mini-kvm", tree)
    for cmd in (["init", "-q"], ["add", "."],
                ["-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "base"]):
        subprocess.run(["git", "-C", str(tree), *cmd], check=True)
    mmu = next(tree.rglob("mmu.c"))
    mmu.write_text(mmu.read_text() + "\n/* local */\n")
    patch = tmp_path / "p.patch"
    patch.write_text("not read: the tree is refused first\n")
    res = CliRunner().invoke(main, ["port", str(patch), "--onto", str(tree), flag])
    assert res.exit_code == 2, res.output
    assert "uncommitted changes" in res.output and "reads HEAD" in res.output
    assert "Traceback" not in res.output


HOLDER = """
import sys
from contextlib import ExitStack
from pathlib import Path
from refactor.port.proof import own_farm
with ExitStack() as farms:
    farm = own_farm(farms, Path(sys.argv[1]), "port-proof-target", {"arch/x86/kvm/mmu.h": b"other run"})
    print(farm, flush=True)
    sys.stdin.read()   # held until the test closes our stdin
"""


def _fake_tree(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    (tree / "arch/x86/kvm").mkdir(parents=True)
    (tree / "Makefile").write_text("all:\n")
    (tree / "arch/x86/kvm/mmu.h").write_text("static int permission_fault(void)\n{\n\treturn 0;\n}\n")
    return tree


def test_two_proofs_of_one_target_at_once_build_in_farms_of_their_own(tmp_path, monkeypatch):
    """The proof's farms are named by target and role: a second run for the same target (a
    process of its own here) rewrote the first one's files under its build.  A farm held by
    a run is skipped; a farm no run holds is reused (fast: only changed files rewritten)."""
    import subprocess
    import sys
    from contextlib import ExitStack

    from refactor.errors import VerifyError
    from refactor.port.proof import own_farm

    monkeypatch.setenv("KVM_REFACTOR_CACHE", str(tmp_path / "cache"))
    tree = _fake_tree(tmp_path)
    with ExitStack() as mine:
        first = own_farm(mine, tree, "port-proof-target", {})
    other = subprocess.Popen([sys.executable, "-c", HOLDER, str(tree)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent)
    try:
        held = Path(other.stdout.readline().strip())
        assert held == first   # nobody held it: the same farm again
        built: list[Path] = []

        def engine(t: Path, **kw):
            built.append(t)
            if len(built) == 2:   # the patched target's farm: its content is what counts
                assert (t / "arch/x86/kvm/mmu.h").read_bytes() == b"this run"
                raise VerifyError(f"{t}: stop here")
            return object()

        with pytest.raises(VerifyError, match="stop here"):
            prove_port(tree, {"arch/x86/kvm/mmu.h": b"this run"}, events=0, engine=engine)
        assert built[0] == tree and built[1] not in (held, tree)
        assert (held / "arch/x86/kvm/mmu.h").read_bytes() == b"other run"
    finally:
        other.stdin.close()
        other.wait(timeout=30)
    with ExitStack() as mine:   # released: the first farm is reused
        assert own_farm(mine, tree, "port-proof-target", {}) == first
        assert own_farm(mine, tree, "port-proof-target", {}) == built[1]

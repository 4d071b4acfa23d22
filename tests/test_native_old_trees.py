"""The native engine on trees it was not written against: 5.10 LTS and 6.12 (Debian's).

Slow suite (`make slow`): each test builds engines (about 20-40 s of CPU per tree cold,
seconds when cached) and verifies the tree's rewrite.  The full trees are used when they
are in the cache (`kvm-refactor fetch-tree 5.10 --full`, `... 6.12 --full`); otherwise
the test is skipped and says how to get them.  The glue adapts to each tree from its own
declarations (emulator/native/features.py; tests/test_native_features.py in the default
suite checks what it reads).

5.10 has one known divergence class, a real behaviour change of the rewrite on 5.10
(docs/native-engine.md, "Trees verified"): 5.10's update_pkru_bitmask() ORs into
pkru_mask without clearing it first (6.x clears it), so root_mmu keeps the write-disable
bits of an earlier CR0.WP=1; the rewrite keeps one walker (gva_walk) for root_mmu's and
nested_mmu's walks, whose mask an L2 entry clears.  With the upstream reset applied to
both trees the divergence is gone.
"""
from __future__ import annotations

from pathlib import Path

import pytest

TREES = Path.home() / ".cache" / "kvm-refactor" / "trees"
PFERR_WRITE, PFERR_USER, PFERR_PK = 1 << 1, 1 << 2, 1 << 5
MMU_C = "arch/x86/kvm/mmu/mmu.c"

# verify's shrunk trace of the divergence (seed 1, fuzz event 7170): L1 with CR4.PKE and
# CR0.WP=1, an L2 entry without PKE, then CR0.WP=0 in L1 and an implicit supervisor write
# to a user page whose key has WD set.
PKRU_TRACE = [
    {"ev": "reset", "tdp": True, "maxphyaddr": 36},
    {"ev": "write", "addr": 1050312, "val": 1122311, "size": 8},
    {"ev": "write", "addr": 1124336, "val": 1126407, "size": 8},
    {"ev": "write", "addr": 1127112, "val": 1130503, "size": 8},
    {"ev": "write", "addr": 1133456, "val": 3526447109, "size": 8},
    {"ev": "efer", "val": 3328},
    {"ev": "cr3", "val": 1048576},
    {"ev": "cr0", "val": 2147549185},
    {"ev": "nested_entry", "vendor": "vmx", "tdp": True, "root": 3145758, "ad": False,
     "execonly": False, "pf_intercept": True, "cr0": 2147549185, "cr3": 3670016,
     "cr4": 1048608, "efer": 3328, "mbec": True},
    {"ev": "nested_exit"},
    {"ev": "cr4", "val": 7340064},
    {"ev": "cr0", "val": 2147483649, "passthrough": True},
    {"ev": "pkru", "val": 3718610142},
    {"ev": "write", "addr": 3145728, "val": 3149831, "size": 8},
    {"ev": "write", "addr": 3149824, "val": 4294967479, "size": 8},
    {"ev": "nested_entry", "vendor": "vmx", "tdp": True, "root": 3145758, "ad": False,
     "execonly": True, "pf_intercept": False, "cr0": 2147483649, "cr3": 3670048, "cr4": 32,
     "efer": 2048},
    {"ev": "nested_exit"},
    {"ev": "translate", "addr": 119569930201087, "access": "implicit_write"},
]


def _cached(version: str) -> Path:
    tree = TREES / f"linux-source-{version}-full"
    if not (tree / ".kvm-refactor-fetch.json").is_file():
        pytest.skip(f"no full {version} tree in {TREES}: `kvm-refactor fetch-tree {version} --full`")
    return tree


@pytest.fixture()
def _persistent_cache(monkeypatch):
    # Engines, plans and farms are content-keyed: kept between runs.
    monkeypatch.setenv("KVM_REFACTOR_CACHE", str(Path.home() / ".cache" / "kvm-refactor"))


def _is_stale_pkru(d) -> bool:
    """The known 5.10 class: the pristine tree reports a protection-key fault on a supervisor
    write (explicit at CPL 0, or implicit) that the rewrite does not (no fault, or the same
    fault without PFERR_PK).  Seed 1 has implicit ones, seed 2 explicit ones."""
    base, cand = d.base.get("fault"), d.result.get("fault")
    return (d.ev.get("access") in ("write", "implicit_write") and base is not None
            and base["error_code"] & (PFERR_PK | PFERR_WRITE | PFERR_USER) == PFERR_PK | PFERR_WRITE
            and (cand is None or cand["error_code"] == base["error_code"] & ~PFERR_PK))


def _verified(version: str, out_dir: Path):
    """(report, its one step) of `verify` of a cached tree's rewrite, 20,000 fuzz events; the
    engine ran everything: no stub, no bug of the pristine tree."""
    from refactor.verify import verify_tree

    report = verify_tree(_cached(version), "upstream", seed=1, events=20_000, out_dir=out_dir)
    step = report.steps[0]
    assert report.base_bugs == [] and report.incomplete is None
    assert step.events >= 20_000 and step.translations > 5_000
    return report, step


@pytest.mark.slow
def test_612_rewrite_verifies(_persistent_cache, tmp_path):
    report, step = _verified("6.12", tmp_path)
    assert (step.divergences, step.bugs) == (0, 0), report.text()


@pytest.mark.slow
def test_510_rewrite_diverges_only_by_the_stale_pkru_mask(_persistent_cache, tmp_path):
    report, step = _verified("5.10", tmp_path)
    assert step.bugs == 0, report.text()
    assert step.divergences == len(step.found) >= 1
    assert all(_is_stale_pkru(d) for d in step.found), report.text()
    assert any("update_pkru_bitmask" in s["function"] or "permission_fault" in s["function"]
               for d in step.found for s in d.sites), report.text()


def _with_pkru_reset(tree: Path, label: str, files: dict[str, bytes], mask: str) -> Path:
    """A farm of `tree` (plus `files`) whose update_pkru_bitmask() clears the mask first,
    as 6.x does: `mask` is the tree's spelling of it (mmu->pkru_mask, w->fmt.pkru_mask)."""
    from refactor.verify.trees import make_farm

    text = (files[MMU_C].decode() if MMU_C in files else (tree / MMU_C).read_text())
    head = "\twp = is_write_protection(vcpu);\n\n\tfor (bit = 0;"
    assert text.count(head) == 1
    return make_farm(tree, label, {**files, MMU_C: text.replace(
        head, f"\t{mask} = 0;\n{head}").encode()})


@pytest.mark.slow
def test_510_divergence_is_the_pkru_reset_5_10_lacks(_persistent_cache):
    """The shrunk trace diverges on 5.10 as it is (PK fault against none) and agrees once
    both trees clear pkru_mask, as 6.x does; so does verify's whole stream."""
    from emulator.native import build_engine
    from refactor.verify.run import corpus_stream, fuzz_stream, run_streams
    from refactor.verify.trees import rewrite_variant

    tree = _cached("5.10")
    variant = rewrite_variant(tree)
    pristine, rewrite = build_engine(tree).model(), build_engine(variant.src).model()
    last = [pristine.apply(ev) for ev in PKRU_TRACE][-1], [rewrite.apply(ev) for ev in PKRU_TRACE][-1]
    assert last[0]["fault"]["error_code"] == 3 | PFERR_PK
    assert last[1]["fault"]["error_code"] == 3
    fixed = build_engine(_with_pkru_reset(tree, "pkru-reset", {}, "mmu->pkru_mask")).model()
    fixed_rw = build_engine(_with_pkru_reset(tree, "pkru-reset-rw", variant.files,
                                             "w->fmt.pkru_mask")).model()
    last = [fixed.apply(ev) for ev in PKRU_TRACE][-1], [fixed_rw.apply(ev) for ev in PKRU_TRACE][-1]
    assert last[0] == last[1] and last[0]["fault"]["error_code"] == 3
    corpus = sorted((Path(__file__).parents[1] / "emulator" / "corpus").glob("*.jsonl"))
    total, tallies, ref_bugs = run_streams([corpus_stream(corpus), fuzz_stream(1, 20_000)],
                                           fixed, {"rewrite": fixed_rw})
    assert total >= 20_000 and ref_bugs == []
    assert (tallies["rewrite"].divergences, tallies["rewrite"].bugs) == (0, 0)

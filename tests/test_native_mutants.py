"""Wrong rules, executed natively: every mutant that changes the C output is killed.

Each mutant (refactor/verify/mutants.py) is one TOML edit of a copy of
rules/, applied through plan_rewrite to the full 6.1 and 7.2 trees; the C it
writes is built by the native engine and run against the pristine tree.
A mutant with the same C output as the correct rewrite is equivalent on that
tree, with the reason in the report.  Slow: one engine build per mutant.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from refactor.rules import load_rules
from refactor.verify.mutants import MUTANTS, mutant_rules_dir, run_mutants


def test_every_mutant_is_one_edit_of_the_current_rules_and_loads():
    assert len(MUTANTS) >= 12
    for m in MUTANTS:
        with tempfile.TemporaryDirectory() as tmp:
            d = mutant_rules_dir(m, Path(tmp) / "rules")
            load_rules(d)   # still valid rules: the wrong rule must be caught by execution
            assert (d / m.file).read_text() != (Path(__file__).parents[1] / "rules" / m.file).read_text()


# What each tree's run gives (30 Nov 2026, seed 1, corpus + 20,000 fuzz events): the
# mutants whose C output equals the correct rewrite's there (each declares why in its
# `equivalent_where`), and those killed by the compiler; every other one is executed and
# killed by a divergence or a bug.  No survivor: since the fuzzer enables MBEC for nested
# EPT, mbec-call-wrong is killed on 7.2; since the layout reader takes a kvm_host.h with
# the GVA walker alone, guest-mmu-attached-to-gva gets its verdict (the compiler's).
EQUIVALENT = {"6.1": {"root-mmu-walker-ngpa", "mbec-call-wrong"},
              "7.2": {"root-mmu-walker-ngpa", "walk-mmu-is-nested-inverted"}}
# walker-init-test-inverted calls a function it renamed: an error since the engine
# compiles without -w (it was a trapping stub at run time).
BUILD = {"6.1": {"guest-rsvd-check-to-mmu-fmt", "guest-mmu-attached-to-gva",
                 "walker-init-test-inverted"},
         "7.2": {"guest-rsvd-check-to-mmu-fmt", "guest-mmu-attached-to-gva",
                 "walker-init-test-inverted"}}


@pytest.mark.slow
@pytest.mark.parametrize("version", ["6.1", "7.2"])
def test_mutants_that_change_the_c_are_killed_natively(version, monkeypatch, tmp_path):
    from test_build import full_tree

    monkeypatch.setenv("KVM_REFACTOR_CACHE", str(Path.home() / ".cache" / "kvm-refactor"))
    report = run_mutants(full_tree(version), "upstream", seed=1, events=20_000,
                         out_dir=tmp_path / "out")
    assert len(report.results) == len(MUTANTS)
    assert report.survivors == 0, [r for r in report.results if not r.killed]
    by = {r.name: r.by for r in report.results}
    assert {n for n, b in by.items() if b == "equivalent"} == EQUIVALENT[version]
    assert {n for n, b in by.items() if b == "build"} == BUILD[version]
    declared = {m.name: m.equivalent_where for m in MUTANTS}
    for r in report.results:
        if r.by == "equivalent":
            # Mechanically equivalent (same C), and the mutant's definition says why.
            assert r.changed_c is False and "same C output" in r.detail
            assert declared[r.name] and declared[r.name] in r.detail, r.name
        elif r.by == "build":
            # The compiler's diagnostic, and only after the correct rewrite built.
            assert r.changed_c and "cannot compile" in r.detail, r
            assert "(the correct rewrite builds)" in r.detail, r
        else:
            # Changed C is executed natively: never counted as killed without running.
            assert r.changed_c and r.changed_files > 0 and r.executed, r
            assert r.killed and r.by in ("divergence", "bug"), r
            # Each kill keeps its own shrunk trace (they used to overwrite one file).
            assert r.trace and Path(r.trace).parent.name == r.name, r
            assert Path(r.trace).is_file() and r.trace in report.text()
    if version == "7.2":      # the wrong `calls` mapping: MBEC's user-exec bit (EPT bit 10)
        assert by["mbec-call-wrong"] == "divergence"
    d = report.as_dict()
    assert d["executed"] + d["killed_by"].get("build", 0) == d["changed_c"] == 16
    assert f"{d['executed']} executed natively" in report.text()


def test_the_mutants_report_is_the_table_the_issue_asks_for():
    from refactor.verify.mutants import MutantResult, MutantsReport

    rep = MutantsReport("linux-6.1", [
        MutantResult("a", "w", "linux-6.1", True, "bug", "corpus/x.jsonl:3: BUG", 2),
        MutantResult("b", "w", "linux-6.1", False, "equivalent", "same C output as the correct "
                     "rewrite: no edit of this tree's rewrite cites x"),
        MutantResult("c", "w", "linux-6.1", True, "build", "farm: x.c:1: error", 1)])
    d = rep.as_dict()
    assert (d["changed_c"], d["executed"], d["killed"], d["equivalent"], d["survived"]) == (2, 1, 2, 1, 0)
    assert d["killed_by"] == {"bug": 1, "build": 1}
    text = rep.text()
    assert "changed C" in text.splitlines()[0]
    assert "3 mutants, 2 change the C, 1 executed natively; 2 killed (1 by bug, 1 by build)" in text

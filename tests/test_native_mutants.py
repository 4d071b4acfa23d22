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


@pytest.mark.slow
@pytest.mark.parametrize("version", ["6.1", "7.2"])
def test_mutants_that_change_the_c_are_killed_natively(version, monkeypatch, tmp_path):
    from test_build import full_tree

    monkeypatch.setenv("KVM_REFACTOR_CACHE", str(Path.home() / ".cache" / "kvm-refactor"))
    report = run_mutants(full_tree(version), "upstream", seed=1, events=20_000)
    assert len(report.results) == len(MUTANTS)
    survivors = [r.as_dict() for r in report.results if not r.killed and r.by != "equivalent"]
    assert survivors == []
    for r in report.results:
        if r.by == "equivalent":
            assert "same C output" in r.detail
        else:
            assert r.changed_files > 0

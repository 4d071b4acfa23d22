"""One rule model, several consumers: the Python model and the rewriter read the same entries.

The model (emulator/derive.py) rewrites kvm_old.py with the mappings of
rules/mappings.toml; the rewriter (refactor/plan) rewrites the real trees with
them.  An entry only one of them reads makes a wrong rule visible to one engine
only: before, `walk-mmu-compare` (the nested-fault test) was read by the model
alone, so its mutant changed the model but never the C (issue 12).
"""
from __future__ import annotations

import re

import pytest

from refactor.rules import CONSUMERS, Rules, load_rules

# Which entries one engine only reads is said in rules/mappings.toml itself (`consumers`,
# with `consumers_why`): these tests hold the rules to what the two engines really read.


def _rewriter_reads(tree, index, rules: Rules, monkeypatch, run=None):
    """Ids of the mapping entries the rewrite of a tree applies.

    Edits cite exprs and calls; some entries are applied inside another rule's edit (bases in
    a field's or call's edit, *-as-builder exprs in a converted argument), so the base and
    expr lookups are recorded too (only lookups that resolve a real expression), and a call
    entry counts when an edit replaces its function by its new one."""
    from refactor.plan.rewrite import plan_rewrite

    seen: set[str] = set()
    base_for, expr = Rules.base_for, Rules.expr

    def recording_base(self, old_expr):
        base = base_for(self, old_expr)
        seen.add(base.id)
        return base

    def recording_expr(self, rule_id):
        found = expr(self, rule_id)
        seen.add(found.id)
        return found

    monkeypatch.setattr(Rules, "base_for", recording_base)
    monkeypatch.setattr(Rules, "expr", recording_expr)
    try:
        plan = run() if run is not None else plan_rewrite(tree, "upstream", rules, index)
    finally:
        monkeypatch.undo()
    mapping_ids = {b.id for b in rules.bases} | {e.id for e in rules.exprs} | {c.id for c in rules.calls}
    edits = plan.edits + plan.post_edits
    cited = {r for e in edits for r in e.rules}
    calls = {c.id for c in rules.calls
             if any(f"{c.function}(" in e.old and f"{c.new}(" in e.new and f"{c.function}(" not in e.new
                    for e in edits)}
    return (seen | cited | calls) & mapping_ids, plan


@pytest.fixture(scope="module")
def reads(trees, indexes):
    from emulator.derive import rules_applied

    rules = load_rules()
    mp = pytest.MonkeyPatch()
    rewriter, plans = set(), {}
    for version in ("6.1", "7.2"):
        seen, plans[version] = _rewriter_reads(trees[version], indexes[version], rules, mp)
        rewriter |= seen
    return set(rules_applied(rules, rules.names("upstream"))), rewriter, plans


def test_every_entry_the_model_reads_the_rewriter_reads(reads):
    model, rewriter, _ = reads
    model_only = load_rules().read_only_by("model")
    missing = sorted(model - rewriter - set(model_only))
    assert not missing, (f"mapping entries the Python model applies but the rewrite of 6.1/7.2 never "
                         f"reads: {missing}; a wrong one changes the model but not the C (if that is "
                         "meant, say consumers = [\"model\"] with a consumers_why in rules/mappings.toml)")
    stale = sorted(set(model_only) & rewriter) + sorted(set(model_only) - model)
    assert not stale, f"rules/mappings.toml says only the model reads them, but it is not so: {stale}"


def test_entries_only_the_rewriter_reads_are_the_ones_rules_name(reads, tmp_path):
    from test_golden import rewrite_case  # tests/ is on sys.path under pytest

    model, rewriter, _ = reads
    rules = load_rules()
    declared = rules.read_only_by("rewriter")
    # A marked entry 6.1 and 7.2 have no site for (nested-mmu-as-builder) is read on its
    # golden pair (tests/golden/<id>), which test_golden.py keeps a real use of it.
    mp = pytest.MonkeyPatch()
    for rule_id in sorted(set(declared) - rewriter):
        seen, _ = _rewriter_reads(None, None, rules, mp,
                                  run=lambda: rewrite_case(rule_id, tmp_path / rule_id)[0])
        rewriter = rewriter | ({rule_id} & seen)
    assert rewriter - model == set(declared), (
        "entries the rewrite reads that the model does not apply differ from those rules/mappings.toml "
        "marks consumers = [\"rewriter\"]: "
        f"unmarked {sorted(rewriter - model - set(declared))} (say so, with a consumers_why), "
        f"marked but not rewriter-only {sorted(set(declared) - (rewriter - model))}")


def test_consumers_are_validated(tmp_path):
    import shutil

    from refactor.errors import RulesError

    src = load_rules().directory
    ok = tmp_path / "ok"
    shutil.copytree(src, ok)
    text = (ok / "mappings.toml").read_text()
    assert len(load_rules(ok).read_only_by("rewriter")) == text.count('consumers = ["rewriter"]') > 0
    assert set(CONSUMERS) == {"model", "rewriter"}
    cases = {
        "no-why": (text.replace('consumers_why = "a C type name; the model has no declarations"\n', ""),
                   "rsvd-bits-validate-type: consumers = ['rewriter'] needs a consumers_why"),
        "unknown": (text.replace('consumers = ["rewriter"]', 'consumers = ["rewritter"]', 1),
                    "consumers must be a non-empty list of model, rewriter"),
        "empty": (text.replace('consumers = ["rewriter"]', "consumers = []", 1),
                  "consumers must be a non-empty list"),
        "why-alone": (text.replace('consumers = ["rewriter"]', 'consumers = ["model", "rewriter"]', 1),
                      "consumers_why is only for an entry whose consumers leave an engine out"),
    }
    for name, (bad, message) in cases.items():
        d = tmp_path / name
        shutil.copytree(src, d)
        (d / "mappings.toml").write_text(bad)
        with pytest.raises(RulesError, match=re.escape(message)):
            load_rules(d)


def test_the_nested_fault_test_comes_from_its_entry(reads, trees, indexes):
    """A wrong walk-mmu-compare changes the C (it was silently ignored before)."""
    import dataclasses

    from refactor.plan.rewrite import plan_rewrite

    rules = load_rules()
    wrong = dataclasses.replace(rules, exprs=[
        dataclasses.replace(e, new="w != &vcpu->arch.{ngpa}") if e.id == "walk-mmu-compare" else e
        for e in rules.exprs])
    site = "arch/x86/kvm/mmu/paging_tmpl.h"
    right_c = reads[2]["6.1"].results[site].decode()
    wrong_c = plan_rewrite(trees["6.1"], "upstream", wrong, indexes["6.1"]).results[site].decode()
    assert "nested_page_fault = w != &vcpu->arch.gva_walk;" in right_c
    assert "nested_page_fault = w != &vcpu->arch.ngpa_walk;" in wrong_c

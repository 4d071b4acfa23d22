"""One rule model, several consumers: the Python model and the rewriter read the same entries.

The model (emulator/derive.py) rewrites kvm_old.py with the mappings of
rules/mappings.toml; the rewriter (refactor/plan) rewrites the real trees with
them.  An entry only one of them reads makes a wrong rule visible to one engine
only: before, `walk-mmu-compare` (the nested-fault test) was read by the model
alone, so its mutant changed the model but never the C (issue 12).
"""
from __future__ import annotations

import pytest

from refactor.rules import Rules, load_rules

# Entries the rewriter reads on the real trees that the model never applies, each with
# why the model has no site for it.  A new entry here needs a reason, not a silence.
# (walk-mmu-as-builder, nested-mmu-as-builder and mbec-on-walker are applied by the rewriter
# too, but its edits cite them under other ids (tests/test_golden.py CITED_AS_OTHERS), so
# this test does not see them; the model applies none of them either.)
REWRITER_ONLY = {
    "walk-mmu-is-nested": "kvm_old.py carries 7.2's mmu_is_nested() (vcpu.arch.mmu is guest_mmu), "
                          "not 6.1's walk_mmu == &nested_mmu form the entry rewrites",
    "rsvd-bits-validate-type": "a C type name; the model has no declarations",
}

# Entries the model reads and the rewriter does not, with the reason (empty: none may be).
MODEL_ONLY: dict[str, str] = {}


def _rewriter_reads(tree, index, rules: Rules, monkeypatch):
    """Ids of the mapping entries the rewrite of a tree applies.

    Edits cite exprs and calls; bases are applied inside a field's or call's edit, so the
    base lookups are recorded too (only lookups that resolve a real expression)."""
    from refactor.plan.rewrite import plan_rewrite

    seen: set[str] = set()
    base_for = Rules.base_for

    def recording(self, old_expr):
        base = base_for(self, old_expr)
        seen.add(base.id)
        return base

    monkeypatch.setattr(Rules, "base_for", recording)
    plan = plan_rewrite(tree, "upstream", rules, index)
    monkeypatch.undo()
    mapping_ids = {b.id for b in rules.bases} | {e.id for e in rules.exprs} | {c.id for c in rules.calls}
    cited = {r for e in plan.edits + plan.post_edits for r in e.rules}
    return (seen | cited) & mapping_ids, plan


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
    missing = sorted(model - rewriter - set(MODEL_ONLY))
    assert not missing, (f"mapping entries the Python model applies but the rewrite of 6.1/7.2 never "
                         f"reads: {missing}; a wrong one changes the model but not the C")
    stale = sorted(set(MODEL_ONLY) & rewriter)
    assert not stale, f"declared model-only but the rewriter reads them: {stale}"


def test_entries_only_the_rewriter_reads_are_the_known_ones(reads):
    model, rewriter, _ = reads
    assert rewriter - model == set(REWRITER_ONLY), (
        "entries the rewrite reads that the model does not apply changed: "
        f"new {sorted(rewriter - model - set(REWRITER_ONLY))}, "
        f"no longer rewriter-only {sorted(set(REWRITER_ONLY) - (rewriter - model))}")


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

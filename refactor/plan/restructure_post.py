"""The restructuring passes that read the finished rewrite (after the locals pass),
in the order they depend on each other: SPTE checks, then per file the walker of
a known MMU and the MMU locals kept for their walker (rules/restructure.toml)."""
from __future__ import annotations

from refactor.plan.restructure_known import plan_known_walkers
from refactor.plan.restructure_mmu_local import plan_mmu_locals
from refactor.plan.restructure_spte import plan_spte_permissions
from refactor.rules import Rules, WalkerNames


def apply_post_restructure(plan, files, rules: Rules, names: WalkerNames, apply) -> None:
    plan_spte_permissions(plan, files, rules, apply)
    for planner in (plan_known_walkers, plan_mmu_locals):
        for rel in sorted(plan.results):
            edits = planner(rel, plan.results[rel], rules, names)
            if edits:
                plan.post_edits.extend(edits)
                plan.results[rel] = apply(plan.results[rel], edits)

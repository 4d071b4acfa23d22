"""The restructuring passes that read the finished rewrite (after the locals pass),
in the order they depend on each other: SPTE checks, then per file the walker of
a known MMU, the MMU locals kept for their walker, and the nesting tests
kvm_translate_gpa() makes itself (rules/restructure.toml)."""
from __future__ import annotations

from refactor.plan.restructure_format import plan_const_walker_params, plan_format_params
from refactor.plan.restructure_known import plan_known_walkers
from refactor.plan.restructure_macro import plan_macro_params
from refactor.plan.restructure_mmu_local import plan_mmu_locals
from refactor.plan.restructure_nested import helper_defined, plan_nested_guards
from refactor.plan.restructure_spte import plan_spte_permissions
from refactor.rules import Rules, WalkerNames


def apply_post_restructure(plan, files, rules: Rules, names: WalkerNames, apply) -> None:
    plan_spte_permissions(plan, files, rules, apply)
    # Walkers are only written where the rewrite already changed the file...
    for planner in (plan_known_walkers, plan_mmu_locals, plan_const_walker_params,
                    plan_format_params, plan_macro_params):
        for rel in sorted(plan.results):
            edits = planner(rel, plan.results[rel], rules, names)
            if edits:
                plan.post_edits.extend(edits)
                plan.results[rel] = apply(plan.results[rel], edits)
    # ...but a nesting test may sit in a file the rewrite had nothing else to do in.
    texts = {rel: plan.results.get(rel, files[rel].src if rel in files else b"")
             for rel in set(files) | set(plan.results)}
    helpers = frozenset(r["helper"] for r in rules.restructure.get("nested_guard", [])
                        if helper_defined(texts.values(), r["helper"]))
    for rel, data in sorted(texts.items()):
        edits = plan_nested_guards(rel, data, rules, names, helpers)
        if edits:
            plan.post_edits.extend(edits)
            plan.originals.setdefault(rel, data)
            plan.results[rel] = apply(data, edits)

"""The fault MMU's walker where the code states which MMU it is
(rules/restructure.toml [[known_walker]]), on the rewritten code.

`vcpu->arch.mmu` is &root_mmu or &guest_mmu, so as a walker it becomes
`vcpu->arch.mmu->w`.  Where the code itself says that L2 runs with nested TDP,
the MMU is guest_mmu and its walker is the {ngpa} walker, written as upstream
writes it (`&vcpu->arch.{ngpa}`):

- a function that asserts it first thing (`WARN_ON_ONCE(!mmu_is_nested(vcpu));`,
  alone or as a bail-out `if (WARN_ON_ONCE(!mmu_is_nested(vcpu))) return ...;`):
  the assertion is the function's precondition, so every use in it;
- the branch taken for a fault of the nGPA stage (`fault->nested_page_fault ?
  <here> : ...`), which only happens while L2 runs with nested TDP.

An assertion that L2 does NOT run nested (`WARN_ON(mmu_is_nested(vcpu))`) says
nothing about guest_mmu and is left alone.
"""
from __future__ import annotations

import re

from tree_sitter import Node

from refactor.frontend.ctype import text, walk_nodes
from refactor.frontend.parse import parse
from refactor.index.functions import top_level
from refactor.plan.edits import Edit
from refactor.rules import Rules, WalkerNames

_WARN = r"(?:WARN_ON\w*|KVM_BUG_ON\w*)"


def _asserted(body: Node, test: str) -> bool:
    """The first statement after the declarations asserts `!test(...)` is false."""
    stmts = [c for c in body.named_children if c.type not in ("comment", "declaration")]
    if not stmts:
        return False
    first = stmts[0]
    want = rf"{_WARN}\s*\(\s*!\s*{re.escape(test)}\s*\(\s*\w+\s*\)\s*(?:,[^()]*)?\)"
    if first.type == "expression_statement":
        return re.fullmatch(want + r"\s*;", text(first).strip()) is not None
    if first.type == "if_statement" and first.child_by_field_name("alternative") is None:
        cond = text(first.child_by_field_name("condition")).strip()
        cons = text(first.child_by_field_name("consequence")).strip()
        return re.fullmatch(rf"\(\s*{want}\s*\)", cond) is not None \
            and re.fullmatch(r"\{?\s*return\b[^;]*;\s*\}?", cons) is not None
    return False


def plan_known_walkers(rel: str, data: bytes, rules: Rules, names: WalkerNames) -> list[Edit]:
    edits: list[Edit] = []
    off = rules.stage.restructure_off if rules.stage is not None else frozenset()
    for rule in rules.restructure.get("known_walker", []):
        p = rule.params
        if rule.id in off:
            continue
        walker = getattr(names, p["walker"])
        # `X->arch.<member>->w` and what follows it (`->field` or nothing).
        chain = re.compile(rf"(\b\w+(?:->|\.)arch)\.{re.escape(p['member'])}\s*->\s*w\b(\s*->)?")
        if not chain.search(data.decode("utf-8", "surrogateescape")):
            continue
        root = parse(rel, data, want_macros=False).main.tree.root_node
        regions: list[Node] = []
        for fn in top_level(root):
            if fn.type != "function_definition":
                continue
            body = fn.child_by_field_name("body")
            if p.get("assert") and _asserted(body, p["assert"]):
                regions.append(body)
                continue
            for n in walk_nodes(body):
                if n.type == "conditional_expression" and p.get("branch_field") and re.fullmatch(
                        rf"\(?\s*\w+\s*->\s*{re.escape(p['branch_field'])}\s*\)?",
                        text(n.child_by_field_name("condition")).strip()):
                    regions.append(n.child_by_field_name("consequence"))
        for region in regions:
            seg = data[region.start_byte:region.end_byte].decode("utf-8", "surrogateescape")
            for m in chain.finditer(seg):
                new = f"{m.group(1)}.{walker}." if m.group(2) else f"&{m.group(1)}.{walker}"
                s = region.start_byte + len(seg[:m.start()].encode("utf-8", "surrogateescape"))
                e = region.start_byte + len(seg[:m.end()].encode("utf-8", "surrogateescape"))
                edits.append(Edit.span(rel, data, s, e, new, rule.id, names.fill(rule.why)))
    return edits


"""A nesting test kvm_translate_gpa() makes itself goes from its callers
(rules/restructure.toml [[nested_guard]]), on the rewritten code.

    if (!hc->fast && mmu_is_nested(vcpu)) {
            hc->ingpa = kvm_x86_ops.nested_ops->translate_nested_gpa(vcpu, hc->ingpa, ...);
            if (unlikely(hc->ingpa == INVALID_GPA))
                    return ...;
    }

becomes `if (!hc->fast) { hc->ingpa = kvm_translate_gpa(vcpu, &vcpu->arch.{gva},
hc->ingpa, ...); ... }`: the helper returns the address unchanged outside
nested TDP.  Applied only where the test is the last operand of an `&&`, the
block opens with the hook's result assigned, and the rest of the block only
checks that result against `invalid`, so nothing else starts running outside
nesting.
"""
from __future__ import annotations

import re

from tree_sitter import Node

from refactor.frontend.ctype import text, walk_nodes
from refactor.frontend.parse import parse
from refactor.plan.edits import Edit
from refactor.plan.parameterize import fill_args
from refactor.rules import Rules, WalkerNames


def _hook_call(node: Node | None, hook: str) -> bool:
    if node is None or node.type != "call_expression":
        return False
    fn = re.sub(r"\s+", "", text(node.child_by_field_name("function")))
    return fn.endswith(f"->{hook}") or fn.endswith(f".{hook}") or fn.endswith(f"({hook})")


def helper_defined(texts, helper: str) -> bool:
    """Whether some file defines `helper` (a tree without it keeps its nesting tests)."""
    pattern = re.compile(rb"\b%s\s*\([^;{]*\)\s*\{" % re.escape(helper.encode()))
    return any(helper.encode() in t and pattern.search(t) for t in texts)


def plan_nested_guards(rel: str, data: bytes, rules: Rules, names: WalkerNames,
                       helpers: frozenset = frozenset()) -> list[Edit]:
    """`helpers`: the rules' helpers the tree defines (helper_defined)."""
    edits: list[Edit] = []
    off = rules.stage.restructure_off if rules.stage is not None else frozenset()
    for rule in rules.restructure.get("nested_guard", []):
        p = rule.params
        if rule.id in off or p["helper"] not in helpers or p["test"].encode() not in data \
                or p["hook"].encode() not in data:
            continue
        why = names.fill(rule.why)

        def add(s, e, new):
            edits.append(Edit.span(rel, data, s, e, new, rule.id, why))

        root = parse(rel, data, want_macros=False).main.tree.root_node
        for ifs in walk_nodes(root):
            if ifs.type != "if_statement" or ifs.child_by_field_name("alternative") is not None:
                continue
            cond = ifs.child_by_field_name("condition")
            inner = next((c for c in cond.named_children if c.type != "comment"), None)
            if inner is None or inner.type != "binary_expression" or text(inner.child_by_field_name("operator")) != "&&":
                continue
            right = inner.child_by_field_name("right")
            m = re.fullmatch(rf"{re.escape(p['test'])}\(\s*(\w+)\s*\)", text(right))
            block = ifs.child_by_field_name("consequence")
            stmts = [s for s in block.named_children if s.type != "comment"] if block.type == "compound_statement" else []
            if m is None or not stmts or stmts[0].type != "expression_statement":
                continue
            assign = stmts[0].named_children[0] if stmts[0].named_children else None
            if assign is None or assign.type != "assignment_expression" \
                    or not _hook_call(assign.child_by_field_name("right"), p["hook"]):
                continue
            target = re.escape(text(assign.child_by_field_name("left")))
            if not all(s.type == "if_statement" and re.search(
                    rf"{target}\s*==\s*{re.escape(p['invalid'])}", text(s.child_by_field_name("condition")))
                    for s in stmts[1:]):
                continue
            vcpu = m.group(1)
            # `C && test(vcpu)` -> `C`
            left = inner.child_by_field_name("left")
            add(inner.start_byte, inner.end_byte, text(left))
            call = assign.child_by_field_name("right")
            args = [text(a) for a in call.child_by_field_name("arguments").named_children if a.type != "comment"]
            args = args[:1] + [f"&{vcpu}->arch.{getattr(names, p['walker'])}"] + args[1:]
            ls = data.rfind(b"\n", 0, stmts[0].start_byte) + 1
            head = data[ls:call.start_byte].decode() + f"{p['helper']}("
            add(ls, stmts[0].end_byte, fill_args(head, args, ");", p.get("wrap", 100)))
    return edits

"""Upstream fixes the new layout depends on (rules/restructure.toml [[prerequisite]]).

With nested_mmu gone, one walker serves L1's walks and L2's.  State that a
builder accumulates without resetting it first was harmless while each MMU
kept its own copy; once two MMUs share the walker it leaks from one to the
other, and the rewrite changes behaviour.  A tree that lacks such a fix gets a
site for a human: backport the fix first (the series would otherwise say "No
functional change" of a commit that makes one).
"""
from __future__ import annotations

from tree_sitter import Node

from refactor.plan.edits import Human


def _field_assignment(stmt: Node, field: str) -> tuple[str, bytes] | None:
    """(operator, right-hand side) when STMT is `X->FIELD op Y;` or `X.FIELD op Y;`."""
    if stmt.type != "expression_statement" or not stmt.named_children:
        return None
    expr = stmt.named_children[0]
    if expr.type != "assignment_expression":
        return None
    left, right = expr.child_by_field_name("left"), expr.child_by_field_name("right")
    op = expr.child_by_field_name("operator")
    if left is None or right is None or op is None or left.type != "field_expression":
        return None
    name = left.child_by_field_name("field")
    if name is None or name.text.decode() != field:
        return None
    return op.text.decode(), right.text


def _accumulates(node: Node, field: str) -> Node | None:
    """The first statement under NODE that ORs into FIELD."""
    stack = [node]
    found: Node | None = None
    while stack:
        n = stack.pop()
        got = _field_assignment(n, field)
        if got is not None and got[0] == "|=" and (found is None or n.start_byte < found.start_byte):
            found = n
        stack.extend(n.named_children)
    return found


def missing_prerequisites(defs: dict, files: dict, rules) -> list[Human]:
    """A site per [[prerequisite]] whose function accumulates into its field on a path where
    the body's own top-level statements never reset it first."""
    out = []
    for rule in rules.restructure.get("prerequisite", []):
        p = rule.params
        for fn in defs.get(p["function"], []):
            body = fn.node.child_by_field_name("body")
            if body is None:
                continue
            first = _accumulates(body, p["field"])
            if first is None:
                continue     # nothing accumulates: the fix's premise does not hold here
            reset = p.get("reset", "0").encode()
            if any(_field_assignment(s, p["field"]) == ("=", reset)
                   for s in body.named_children if s.start_byte < first.start_byte):
                continue
            src = files[fn.file].src
            line = src.count(b"\n", 0, first.start_byte + fn.frag.offset) + 1
            out.append(Human(fn.file, line,
                             f"{p['function']}() accumulates into {p['field']} without resetting "
                             f"it first ({rule.id}): {rule.why}; backport upstream commit "
                             f"{p['upstream'][:12]} (\"{p['subject']}\") before this refactor.",
                             first.text.decode(errors="replace")))
    return out

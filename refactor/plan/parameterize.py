"""Parameterize a walker function over what it reads of the walker
(rules/restructure.toml [[parameterize]]), on the rewritten code.

update_permission_bitmask(w, tdp, ept) reads the walker's role through
accessors (`bool cr4_smep = is_cr4_smep(w);`...) and writes the walker's
page format.  Split it as upstream did: the body becomes
__update_permission_bitmask(fmt, tdp, ept, cr4_smep, ...), taking the format
and the role bits as parameters, and update_permission_bitmask() stays, with
the same signature, as the call that passes them.  Nothing else changes, so
callers and behaviour are as before.  Applied only when the body uses the
walker for nothing but those accessor locals and the member.
"""
from __future__ import annotations

import re

from tree_sitter import Node

from refactor.frontend.ctype import text, walk_nodes as _walk
from refactor.frontend.parse import parse
from refactor.index.functions import top_level
from refactor.index.program import function_name
from refactor.plan.edits import Edit
from refactor.rules import Rules


def fill_args(head: str, items: list[str], tail: str, width: int = 80) -> str:
    """`head` + comma-separated items + `tail`, wrapped kernel style under the parenthesis."""
    col = len(head.expandtabs(8).splitlines()[-1])
    indent = "\t" * (col // 8) + " " * (col % 8)
    lines, cur = [], head
    for i, item in enumerate(items):
        piece = item + (tail if i == len(items) - 1 else ",")
        sep = "" if cur in (head,) else " "
        if cur != head and len((cur + sep + piece).expandtabs(8)) > width:
            lines.append(cur)
            cur = indent + piece
        else:
            cur = cur + sep + piece
    lines.append(cur)
    return "\n".join(lines)


def plan_parameterize(rel: str, data: bytes, rules: Rules) -> list[Edit]:
    edits: list[Edit] = []
    walker_t = f"struct {rules.types['walker']}"
    format_t = f"struct {rules.types['format']}"
    off = rules.stage.restructure_off if rules.stage is not None else frozenset()
    for rule in rules.restructure.get("parameterize", []):
        p = rule.params
        if rule.id in off or p["function"].encode() not in data or p["inner"].encode() in data:
            continue
        root = parse(rel, data, want_macros=False).main.tree.root_node
        fn = next((n for n in top_level(root) if n.type == "function_definition"
                   and function_name(n) == p["function"]), None)
        if fn is None:
            continue
        decl = fn.child_by_field_name("declarator")
        while decl is not None and decl.type != "function_declarator":
            decl = decl.child_by_field_name("declarator")
        params = [x for x in decl.child_by_field_name("parameters").named_children
                  if x.type == "parameter_declaration"]
        idx = p.get("param", 0)
        m = re.fullmatch(rf"{re.escape(walker_t)}\s*\*\s*(\w+)", text(params[idx])) if len(params) > idx else None
        if m is None:
            continue
        wname, member = m.group(1), p.get("member", "fmt")
        body = fn.child_by_field_name("body")
        # Locals set from one accessor of the walker become parameters.
        accessors, drop = [], []
        for d in body.named_children:
            if d.type != "declaration":
                continue
            dm = re.fullmatch(rf"(\w+)\s+(\w+)\s*=\s*(\w+)\(\s*{wname}\s*\)\s*;", text(d).strip())
            if dm:
                accessors.append((dm.group(1), dm.group(2), dm.group(3)))
                drop.append(d)
        if not accessors:
            continue
        # Every other use of the walker is its member.
        uses, ok = [], True
        for n in _walk(body):
            if n.type != "identifier" or text(n) != wname or any(d.start_byte <= n.start_byte < d.end_byte
                                                                  for d in drop):
                continue
            fe = n.parent
            if fe is None or fe.type != "field_expression" or text(fe.child_by_field_name("field")) != member:
                ok = False
                break
            par = fe.parent
            if par is not None and par.type == "field_expression" and par.child_by_field_name("argument") == fe:
                op = par.child_by_field_name("operator") or par.children[1]
                uses.append((fe.start_byte, op.end_byte, f"{member}->"))
            elif par is not None and par.type == "pointer_expression" and text(par).startswith("&"):
                uses.append((par.start_byte, par.end_byte, member))
            else:
                ok = False
                break
        if not ok or re.search(rf"\b{member}\b", text(body).replace(f"{wname}->{member}", "")):
            continue
        # The inner function: the body with the member as `fmt` and the role bits as parameters.
        cuts = sorted(uses + [(data.rfind(b"\n", 0, d.start_byte) + 1, data.find(b"\n", d.end_byte) + 1, "")
                              for d in drop])
        out, pos = [], body.start_byte
        for s, e, new in cuts:
            out.append(data[pos:s].decode())
            out.append(new)
            pos = e
        out.append(data[pos:body.end_byte].decode())
        inner_body = re.sub(r"\n[ \t]*\n([ \t]*\n)+", "\n\n", "".join(out))
        inner_body = re.sub(r"(\{\n)[ \t]*\n", r"\1", inner_body)
        head = text(fn)[:decl.start_byte - fn.start_byte]
        rest = [text(x) for i, x in enumerate(params) if i != idx]
        new_params = [f"{format_t} *{member}"] + rest + [f"{t} {n}" for t, n, _ in accessors]
        inner = fill_args(f"{head}{p['inner']}(", new_params, ")") + "\n" + inner_body
        # The outer function: same signature, passes the member and the role bits.
        wparam = p.get("name", "w")
        outer_params = [text(x) if i != idx else f"{walker_t} *{wparam}" for i, x in enumerate(params)]
        fwd = [f"&{wparam}->{member}"] + [re.search(r"(\w+)\s*$", r).group(1) for r in rest]
        call_head = f"\t{p['inner']}("
        col = len(call_head.expandtabs(8))
        indent = "\t" * (col // 8) + " " * (col % 8)
        calls = [f"{a}({wparam})" for _, _, a in accessors]
        lines = [call_head + ", ".join(fwd) + ","]
        for i in range(0, len(calls), 2):
            lines.append(indent + ", ".join(calls[i:i + 2]) + ("," if i + 2 < len(calls) else ");"))
        outer = f"{head}{p['function']}({', '.join(outer_params)})\n{{\n" + "\n".join(lines) + "\n}"
        edits.append(Edit(rel, fn.start_byte, fn.end_byte, inner + "\n\n" + outer, rule.id, rule.why,
                          text(fn), data.count(b"\n", 0, fn.start_byte) + 1))
    return edits

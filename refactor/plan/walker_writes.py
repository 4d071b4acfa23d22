"""No walker field written twice (rules/restructure.toml [[walker_init]], second half).

Once the walker initialiser (`to`) runs first for every walker, the MMU
initialisers that run after it (`then_mmu`) must not write the walker fields
again: their walker writes, the test of the walker's role in their early
return, and the calls `to` also makes on the walker go, with the helpers
only they call; a parameter left unused goes from the definition and its
calls.  A caller of such an initialiser outside the dispatcher
(`walker_first`) initialises its MMU's walker itself, right after it last
adjusts the role.  `to` chooses the walker's gva_to_gpa from the walker's
role, as the MMU initialisers did (`selection_from`).  Separately, an
assignment of a constant repeated in one run of such assignments (two old
members that became the same walker) is written once.

All on the rewritten text of one file; every precondition is checked on the
code, and a site that does not match is left alone.
"""
from __future__ import annotations

import re

from tree_sitter import Node

from refactor.frontend.ctype import text, walk_nodes as _walk, function_params as _params
from refactor.plan.edits import Edit, Human
from refactor.rules import Rules, WalkerNames


def _pname(p: Node) -> str:
    m = re.search(r"(\w+)\s*$", text(p))
    return m.group(1) if m else ""


def _calls(root: Node, name: str) -> list[Node]:
    return [n for n in _walk(root) if n.type == "call_expression"
            and text(n.child_by_field_name("function")) == name]


def _args(call: Node) -> list[Node]:
    return [a for a in call.child_by_field_name("arguments").named_children if a.type != "comment"]


class _Lines:
    """Whole lines to drop from a function, with the blank lines that would be left doubled."""

    def __init__(self, data: bytes):
        self.data = data
        self.drop: set[int] = set()  # line start offsets

    def node(self, node: Node) -> None:
        start = self.data.rfind(b"\n", 0, node.start_byte) + 1
        end = self.data.find(b"\n", node.end_byte) + 1
        pos = start
        while pos < end:
            self.drop.add(pos)
            pos = self.data.find(b"\n", pos) + 1

    def edits(self, fn: Node, rel: str, rule_id: str, why: str) -> list[Edit]:
        if not self.drop:
            return []
        body = fn.child_by_field_name("body")
        lines = []
        pos = self.data.rfind(b"\n", 0, body.start_byte) + 1
        while pos < body.end_byte:
            nxt = self.data.find(b"\n", pos) + 1
            lines.append((pos, nxt))
            pos = nxt
        kept = [(s, e) for s, e in lines if s not in self.drop]
        blank = lambda se: not self.data[se[0]:se[1]].strip()  # noqa: E731
        gone = set(s for s, _ in lines if s in self.drop)
        for i, se in enumerate(kept):
            if blank(se) and (i == 0 or blank(kept[i - 1]) or i + 1 == len(kept)
                              or self.data[kept[i + 1][0]:kept[i + 1][1]].strip() == b"}"
                              or self.data[kept[i - 1][0]:kept[i - 1][1]].strip().endswith(b"{")):
                gone.add(se[0])
        out = []
        for s, e in lines:
            if s in gone:
                out.append(Edit(rel, s, e, "", rule_id, why, self.data[s:e].decode("utf-8", "replace"),
                                self.data.count(b"\n", 0, s) + 1))
        return out


def plan_walker_writes(rel: str, data: bytes, fns: dict[str, Node], step, rules: Rules,
                       names: WalkerNames, humans: list[Human]) -> list[Edit]:
    then = [n for n in step.get("then_mmu", []) if n in fns]
    to_fn = fns.get(step["from"])
    if not then or to_fn is None:
        return _dedupe(rel, data, fns, step, names)
    rid, why = step["id"], step.get("why_writes", step["why"])
    edits: list[Edit] = []
    fields = {f.name for f in rules.mmu_fields.values() if f.moves_to_walker and f.path == f.name}
    # What `to` does to its walker besides field writes: calls taking it.
    to_calls = {text(c.child_by_field_name("function")) for c in _walk(to_fn)
                if c.type == "call_expression" and any(re.fullmatch(r"\w+", text(a)) for a in _args(c))}
    removed_params: dict[str, list[int]] = {}
    helpers: dict[str, str] = {}  # helper -> its mmu parameter
    selection = None
    for name in then:
        fn = fns[name]
        mmu = next((_pname(p) for p in _params(fn) if text(p.child_by_field_name("type")) ==
                    f"struct {rules.types['mmu']}"), None)
        body = fn.child_by_field_name("body")
        if mmu is None:
            for d in body.named_children:
                if d.type == "declaration" and text(d.child_by_field_name("type")) == f"struct {rules.types['mmu']}":
                    mmu = re.search(r"\*\s*(\w+)", text(d)).group(1)
        if mmu is None:
            continue
        chain = rf"{re.escape(mmu)}->w"
        lines = _Lines(data)

        def walker_write(stmt: Node) -> bool:
            t = text(stmt).strip()
            m = re.fullmatch(rf"{chain}->(\w+)(?:\.\w+)*\s*=[^=][^;]*;", t, re.S)
            if m and m.group(1) in fields:
                return True
            m = re.fullmatch(r"(\w+)\((.*)\);", t, re.S)
            return bool(m and m.group(1) in to_calls and re.search(rf"(?<![\w>]){chain}\b(?!->)", m.group(2)))

        def all_writes(stmt: Node) -> bool:
            if stmt.type == "expression_statement":
                return walker_write(stmt)
            if stmt.type == "if_statement":
                cons = stmt.child_by_field_name("consequence")
                alt = stmt.child_by_field_name("alternative")
                parts = [cons] + ([alt.named_children[-1]] if alt is not None else [])
                return all(all_writes(p) for p in parts)
            if stmt.type == "compound_statement":
                kids = [c for c in stmt.named_children if c.type != "comment"]
                return bool(kids) and all(all_writes(c) for c in kids)
            return False

        for stmt in body.named_children:
            if stmt.type == "if_statement" and stmt.child_by_field_name("alternative") is not None \
                    and all_writes(stmt):
                selection = selection or (stmt, mmu)
                lines.node(stmt)
            elif stmt.type == "expression_statement" and walker_write(stmt):
                lines.node(stmt)
            elif stmt.type == "if_statement":
                cond = stmt.child_by_field_name("condition")
                inner = cond.named_children[0] if cond.named_children else None
                if inner is not None and inner.type == "binary_expression" and \
                        text(inner.child_by_field_name("operator")) == "&&":
                    left, right = inner.child_by_field_name("left"), inner.child_by_field_name("right")
                    role = rf"\w+\.as_u64\s*==\s*{chain}->cpu_role\.as_u64"
                    if re.fullmatch(role, text(left)):
                        edits.append(_edit(rel, data, inner.start_byte, inner.end_byte, text(right), rid, why))
                    elif re.fullmatch(role, text(right)):
                        edits.append(_edit(rel, data, inner.start_byte, inner.end_byte, text(left), rid, why))
        edits += lines.edits(fn, rel, rid, why)
        # Helpers called only from these initialisers, with the MMU.
        for c in _walk(body):
            if c.type == "call_expression":
                callee = text(c.child_by_field_name("function"))
                if callee in fns and callee not in then and [text(a) for a in _args(c)] == [mmu]:
                    hp = _params(fns[callee])
                    if len(hp) == 1:
                        helpers[callee] = _pname(hp[0])
        # Parameters whose every use was dropped.
        dropped = [e for e in edits if e.file == rel and fn.start_byte <= e.start < fn.end_byte]
        kept_text = _without(data, body, dropped)
        for i, p in enumerate(_params(fn)):
            pn = _pname(p)
            if pn and pn != mmu and not re.search(rf"\b{re.escape(pn)}\b", kept_text):
                removed_params.setdefault(name, []).append(i)
    for helper, mmu in helpers.items():
        callers = [c for c in _calls_anywhere(fns, helper)]
        if any(owner not in then for owner in callers):
            continue
        lines = _Lines(data)
        for stmt in fns[helper].child_by_field_name("body").named_children:
            m = re.fullmatch(rf"{re.escape(mmu)}->w->(\w+)\s*=[^;]*;", text(stmt).strip())
            if stmt.type == "expression_statement" and m and m.group(1) in fields:
                lines.node(stmt)
        edits += lines.edits(fns[helper], rel, rid, why)
    # Unused parameters: from the definition and from every call in the file.
    first_callers = set(step.get("walker_first", []))
    for name, idxs in removed_params.items():
        params = _params(fns[name])
        for i in idxs:
            edits.append(_edit(rel, data, params[i - 1].end_byte if i else params[i].start_byte,
                               params[i].end_byte if i else params[i + 1].start_byte, "", rid, why))
        for owner, fn in fns.items():
            for c in _calls(fn, name):
                args = _args(c)
                if len(args) != len(params):
                    continue
                if owner in first_callers:
                    first = _walker_first(rel, data, fn, c, args, idxs, step, rules, names, rid, why)
                    if first and to_fn.start_byte > fn.start_byte:
                        # `to` is defined further down: declare it before its new caller.
                        proto = _prototype(to_fn, step, rules)
                        if proto:
                            pos = data.rfind(b"\n", 0, fn.start_byte) + 1
                            first.append(_edit(rel, data, pos, pos, proto + "\n\n", rid, why))
                    edits += first
                for i in idxs:
                    edits.append(_edit(rel, data, args[i - 1].end_byte if i else args[i].start_byte,
                                       args[i].end_byte if i else args[i + 1].start_byte, "", rid, why))
    if selection is not None:
        edits += _role_selection(rel, data, to_fn, selection, rid, why)
    # The role parameter is named like the other initialisers' (`role_param`).
    params = _params(to_fn)
    old = _pname(params[-1]) if params else ""
    want = step.get("role_param")
    if want and old and old != want and want not in {text(n) for n in _walk(to_fn) if n.type == "identifier"}:
        edits += [_edit(rel, data, n.start_byte, n.end_byte, want, rid, why)
                  for n in _walk(to_fn) if n.type == "identifier" and text(n) == old]
    return edits + _dedupe(rel, data, fns, step, names)


def _calls_anywhere(fns, name) -> list[str]:
    return [owner for owner, fn in fns.items() for _ in _calls(fn, name)]


def _without(data: bytes, body: Node, edits: list[Edit]) -> str:
    out, pos = [], body.start_byte
    for e in sorted(edits, key=lambda e: e.start):
        if e.start < pos:
            continue
        out.append(data[pos:e.start].decode("utf-8", "replace"))
        out.append(e.new)
        pos = e.end
    out.append(data[pos:body.end_byte].decode("utf-8", "replace"))
    return "".join(out)


def _edit(rel, data, start, end, new, rid, why) -> Edit:
    return Edit(rel, start, end, new, rid, why, data[start:end].decode("utf-8", "replace"),
                data.count(b"\n", 0, start) + 1)


def _walker_first(rel, data, fn, call, args, idxs, step, rules, names, rid, why) -> list[Edit]:
    """`to(vcpu, &ARCH.<walker of the MMU>, role);` after the role's last adjustment."""
    mmu_arg = next((text(a) for a in args if re.fullmatch(r"&?\w+(?:->|\.)arch\.\w+|\w+", text(a))
                    and text(a) != text(args[0])), None)
    body = fn.child_by_field_name("body")
    target = mmu_arg
    for d in body.named_children:
        if d.type == "declaration" and mmu_arg and re.search(rf"\*\s*{re.escape(mmu_arg)}\s*=", text(d)):
            target = text(d.named_children[-1].child_by_field_name("value"))
    m = re.fullmatch(r"&(\w+(?:->|\.)arch)\.(\w+)", re.sub(r"\s+", "", target or ""))
    member = rules.vcpu_old.get(m.group(2)) if m else None
    if member is None or member.walker is None or len(idxs) != 1:
        return []
    role = text(args[idxs[0]])
    last = None
    for stmt in body.named_children:
        if stmt.start_byte >= call.start_byte:
            break
        if stmt.type == "expression_statement" and re.match(rf"\s*{re.escape(role)}\b[.\w]*\s*=", text(stmt)):
            last = stmt
    walker = getattr(names, member.walker)
    line = f"\t{step['to']}({text(args[0])}, &{m.group(1)}.{walker}, {role});\n"
    if last is not None:
        pos = data.find(b"\n", last.end_byte) + 1
        return [_edit(rel, data, pos, pos, "\n" + line, rid, why)]
    pos = data.rfind(b"\n", 0, call.start_byte) + 1
    return [_edit(rel, data, pos, pos, line + "\n", rid, why)]


def _prototype(to_fn: Node, step, rules: Rules) -> str | None:
    """`static void to(struct kvm_vcpu *vcpu, struct kvm_pagewalk *w, union kvm_cpu_role role);`"""
    params = _params(to_fn)
    body = to_fn.child_by_field_name("body")
    walker = None
    for d in body.named_children:
        if d.type == "declaration" and text(d.child_by_field_name("type")) == f"struct {rules.types['walker']}":
            walker = re.search(r"\*\s*(\w+)", text(d)).group(1)
    if walker is None or len(params) != 2:
        return None
    decl = to_fn.child_by_field_name("declarator")
    head = text(to_fn)[:decl.start_byte - to_fn.start_byte]
    role = text(params[1])
    if step.get("role_param"):
        role = re.sub(r"\w+\s*$", step["role_param"], role)
    first = f"{head}{step['to']}({text(params[0])}, struct {rules.types['walker']} *{walker},"
    if len(first) + len(role) + 3 <= 100:
        return f"{first} {role});"
    col = len(head) + len(step["to"]) + 1  # continuation aligned under the parenthesis
    return f"{first}\n{chr(9) * (col // 8)}{' ' * (col % 8)}{role});"


def _role_selection(rel, data, to_fn, selection, rid, why) -> list[Edit]:
    """`to` picks gva_to_gpa from the walker's role, like the MMU initialisers did."""
    stmt, mmu = selection
    body = to_fn.child_by_field_name("body")
    walker = None
    for d in body.named_children:  # before walker_init's edits the walker is still a local
        if d.type == "declaration" and re.search(r"\bstruct\s+\w+\s*\*\s*(\w+)\s*=\s*&", text(d)):
            walker = re.search(r"\*\s*(\w+)", text(d)).group(1)
    params = _params(to_fn)
    walker = walker or (_pname(params[1]) if len(params) > 1 else None)
    if walker is None:
        return []
    for s in body.named_children:
        if s.type == "if_statement" and s.child_by_field_name("alternative") is not None \
                and re.search(rf"\b{walker}->gva_to_gpa\s*=", text(s)) \
                and not re.search(r"\b\w+->w\b", text(s)):
            new = re.sub(rf"\b{re.escape(mmu)}->w\b", walker, text(stmt))
            start = s.start_byte
            prev = s.prev_named_sibling
            while prev is not None and prev.type == "comment":  # the comments explained the old choice
                start = prev.start_byte
                prev = prev.prev_named_sibling
            return [_edit(rel, data, start, s.end_byte, new, rid, why)]
    return []


def _dedupe(rel, data, fns, step, names) -> list[Edit]:
    """A constant walker assignment repeated within one run of constant assignments is written once."""
    out = []
    walker = re.compile(rf"(?:\.|->)(?:{re.escape(names.gva)}|{re.escape(names.ngpa)}|w)(?:\.|->)")
    const = re.compile(r"[\w>.\-\[\]]+\s*=\s*(?:-?\d+|true|false|NULL)\s*;")
    for fn in fns.values():
        body = fn.child_by_field_name("body")
        seen: dict[str, Node] = {}
        for stmt in body.named_children:
            t = re.sub(r"\s+", "", text(stmt))
            if stmt.type != "expression_statement" or not const.fullmatch(text(stmt).strip()):
                seen = {}
                continue
            if t in seen and walker.search(t):
                # The last write stays: it is the one of the member that took the walker's place.
                s = data.rfind(b"\n", 0, seen[t].start_byte) + 1
                e = data.find(b"\n", seen[t].end_byte) + 1
                out.append(_edit(rel, data, s, e, "", step["dedupe_id"], step["why_dedupe"]))
            seen[t] = stmt
    return out

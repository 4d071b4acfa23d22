"""Post-pass restructuring: initialise the walker of the running level in one place.

Runs on the rewritten files (rules/restructure.toml [[walker_init]]): the
walk-only initialiser becomes init_kvm_page_walk(vcpu, w, role), the
dispatcher calls it first and builds root_mmu only outside nested TDP, and an
initialiser that only added walker callbacks to the shadow MMU's set-up is
replaced by that set-up.  Each change checks its precondition on the code and
reports a human site instead of guessing.
"""
from __future__ import annotations

import re

from tree_sitter import Node

from refactor.frontend.ctype import text
from refactor.plan.edits import Edit, Human
from refactor.plan.walker_writes import plan_walker_writes
from refactor.index.functions import top_level
from refactor.frontend.parse import parse
from refactor.rules import Rules, WalkerNames
from refactor.index.program import function_name


def _functions(root: Node) -> dict[str, Node]:
    return {function_name(n): n for n in top_level(root) if n.type == "function_definition"}


def _line_span(src: bytes, node: Node) -> tuple[int, int]:
    start = src.rfind(b"\n", 0, node.start_byte) + 1
    end = src.find(b"\n", node.end_byte)
    return start, (len(src) if end < 0 else end + 1)


def _calls(root: Node, name: str) -> list[Node]:
    out, stack = [], [root]
    while stack:
        node = stack.pop()
        if node.type == "call_expression" and text(node.child_by_field_name("function")) == name:
            out.append(node)
        stack.extend(node.children)
    return out


def plan_walker_init(rel: str, data: bytes, rules: Rules, names: WalkerNames,
                     humans: list[Human]) -> list[Edit]:
    edits: list[Edit] = []
    for step in rules.restructure.get("walker_init", []):
        if step["from"].encode() not in data:
            continue
        pf = parse(rel, data, want_macros=False)
        root = pf.main.tree.root_node
        fns = _functions(root)
        if step["from"] not in fns or step["dispatcher"] not in fns:
            continue

        def add(start, end, new, why=step["why"]):
            edits.append(Edit(rel, start, end, new, step["id"], why, data[start:end].decode("utf-8", "replace"),
                              data.count(b"\n", 0, start) + 1))

        def human(node, why):
            humans.append(Human(rel, data.count(b"\n", 0, node.start_byte) + 1, f"{step['id']}: {why}"))

        fn = fns[step["from"]]
        body = fn.child_by_field_name("body")
        walker_t = f"struct {rules.types['walker']}"
        local = None
        for stmt in body.named_children:
            if stmt.type == "declaration" and text(stmt.child_by_field_name("type")) == walker_t:
                value = stmt.named_children[-1].child_by_field_name("value")
                if value is not None and re.fullmatch(rf"&\w+->arch\.{names.gva}", text(value).replace(" ", "")):
                    local = stmt
        if local is None:
            human(fn, f"{step['from']}() does not initialise the {names.gva} walker alone")
            continue
        var = re.search(r"\*\s*(\w+)", text(local.named_children[-1])).group(1)
        # The function: new name, the walker as second parameter, no local.
        decl = fn.child_by_field_name("declarator")
        while decl.type != "function_declarator":
            decl = decl.child_by_field_name("declarator")
        fname = decl.child_by_field_name("declarator")
        add(fname.start_byte, fname.end_byte, step["to"])
        params = [p for p in decl.child_by_field_name("parameters").named_children
                  if p.type == "parameter_declaration"]
        add(params[0].end_byte, params[0].end_byte, f", {walker_t} *{var}")
        # Parameter lines aligned to the open parenthesis follow the new name's length.
        paren = decl.child_by_field_name("parameters").start_byte
        old_col = len(data[data.rfind(b"\n", 0, paren) + 1:paren].decode().expandtabs(8)) + 1
        new_col = old_col + len(step["to"]) - len(step["from"])
        for p in params[1:]:
            ls = data.rfind(b"\n", 0, p.start_byte) + 1
            lead = data[ls:p.start_byte]
            if new_col != old_col and not lead.strip() and len(lead.decode().expandtabs(8)) == old_col:
                add(ls, p.start_byte, "\t" * (new_col // 8) + " " * (new_col % 8))
        s, e = _line_span(data, local)
        if data[e:e + 1] == b"\n":
            e += 1  # and the blank line after the declarations
        add(s, e, "")
        # The dispatcher: walker first, root_mmu only outside nested TDP.
        disp = fns[step["dispatcher"]]
        calls = _calls(disp, step["from"])
        if len(calls) != 1:
            human(disp, f"{step['dispatcher']}() does not call {step['from']}() once")
            continue
        stmt = calls[0].parent
        ifs = stmt.parent if stmt is not None else None
        if stmt is None or stmt.type != "expression_statement" or ifs is None or ifs.type != "if_statement" \
                or step["nested_test"].replace(" ", "") not in text(ifs.child_by_field_name("condition")).replace(" ", ""):
            human(disp, f"{step['dispatcher']}() does not test {step['nested_test']} before {step['from']}()")
            continue
        args = [a for a in calls[0].child_by_field_name("arguments").named_children if a.type != "comment"]
        arch = re.match(r"(\w+)", text(args[0])).group(1) + "->arch"
        call = f"{step['to']}({text(args[0])}, &{arch}.{names.gva}, {', '.join(text(a) for a in args[1:])});"
        indent = re.match(rb"[ \t]*", data[_line_span(data, ifs)[0]:]).group().decode()
        new = indent + call + "\n"
        alt = ifs.child_by_field_name("alternative")
        if alt is not None:
            inner = [c for c in alt.named_children if c.type != "comment"][0]
            rest = indent + data[inner.start_byte:inner.end_byte].decode()
            rest = "\n".join(("\t" + line) if line.strip() else line for line in rest.splitlines())
            for old, target in step.get("merge", {}).items():
                if old in fns and _only_setup_and_walker(fns[old], target, rules, names):
                    rest = re.sub(rf"\b{re.escape(old)}\(", f"{target}(", rest)
            for old, target in _renames(step, fns).items():
                rest = re.sub(rf"\b{re.escape(old)}\(", f"{target}(", rest)
            new += f"\n{indent}if (!{step['nested_test']}) {{\n{rest}\n{indent}}}\n"
        s, e = _line_span(data, ifs)
        add(s, e, new)
        # Initialisers that were the shadow set-up plus walker callbacks.
        for old, target in step.get("merge", {}).items():
            if old not in fns:
                continue
            if not _only_setup_and_walker(fns[old], target, rules, names):
                human(fns[old], f"{old}() does more than {target}() and walker callbacks")
                continue
            for c in _calls(root, old):
                if ifs.start_byte <= c.start_byte < ifs.end_byte:
                    continue  # rewritten with the dispatcher above
                fnode = c.child_by_field_name("function")
                add(fnode.start_byte, fnode.end_byte, target)
            s, e = _line_span(data, fns[old])
            if data[e:e + 1] == b"\n":
                e += 1
            add(s, e, "")
        # The set-up the merge kept takes the initialisers' name (static functions only).
        for old, target in _renames(step, fns).items():
            decl = fns[old].child_by_field_name("declarator")
            while decl.type != "function_declarator":
                decl = decl.child_by_field_name("declarator")
            fname = decl.child_by_field_name("declarator")
            add(fname.start_byte, fname.end_byte, target)
            gone = [fns[o] for o in step.get("merge", {}) if o in fns] + [ifs]
            for c in _calls(root, old):
                if not any(g.start_byte <= c.start_byte < g.end_byte for g in gone):
                    fnode = c.child_by_field_name("function")
                    add(fnode.start_byte, fnode.end_byte, target)
        edits.extend(plan_walker_writes(rel, data, fns, step, rules, names, humans))
    return edits


def _renames(step, fns) -> dict[str, str]:
    out = {}
    for old, target in step.get("rename", {}).items():
        fn = fns.get(old)
        if fn is not None and target not in fns and re.match(r"\s*static\b", text(fn)):
            out[old] = target
    return out


def _only_setup_and_walker(fn: Node, target: str, rules: Rules, names: WalkerNames) -> bool:
    """The body is walker declarations, one call to `target`, and walker-field writes."""
    walker_fields = {n for n, f in rules.mmu_fields.items() if f.moves_to_walker}
    calls = 0
    for stmt in fn.child_by_field_name("body").named_children:
        t = text(stmt)
        if stmt.type == "comment":
            continue
        if stmt.type == "declaration" and f"struct {rules.types['walker']}" in t:
            continue
        if stmt.type == "expression_statement" and re.fullmatch(rf"{re.escape(target)}\([^;]*\);", t.strip()):
            calls += 1
            continue
        m = re.fullmatch(r"\w+->(\w+)\s*=\s*\w+;", t.strip())
        if stmt.type == "expression_statement" and m and m.group(1) in walker_fields:
            continue
        return False
    return calls == 1

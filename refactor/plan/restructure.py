"""Restructuring steps from rules/restructure.toml (not renamings).

attach_walker: the function that creates an MMU takes the walker to attach
and stores it (`mmu->w = w;`); every call passes the walker of the MMU it
creates, as layout.toml says (root_mmu -> {gva}, guest_mmu -> {ngpa}).
"""
from __future__ import annotations

import re

from refactor.frontend.ctype import text
from refactor.rules import Rules, WalkerNames
from refactor.plan.edits import Edit
from refactor.plan.translate import Context


def plan_restructure(files, defs, rules: Rules, names: WalkerNames, ctx: Context) -> list[Edit]:
    edits: list[Edit] = []
    for step in rules.restructure.get("attach_walker", []):
        edits += _attach_walker(files, defs, rules, names, ctx, step)
    for step in rules.restructure.get("attach_member", []):
        edits += _attach_member(files, defs, rules, names, step)
    return edits


# Statements after which control never reaches the next line.
_NO_FALL_THROUGH = ("return_statement", "goto_statement", "break_statement", "continue_statement")


def _attach_member(files, defs, rules, names, step) -> list[Edit]:
    """`vcpu->arch.<member>.w = &vcpu->arch.<walker>;` after the creating calls."""
    info = rules.vcpu_old.get(step["member"])
    if info is None or info.removed or info.walker is None:
        return []
    out: list[Edit] = []
    needle = step["after_call"].encode()
    for fns in defs.values():
        for fn in fns:
            pf = files[fn.file]
            body = fn.node.child_by_field_name("body")
            if body is None or needle not in pf.src[body.start_byte + fn.frag.offset:body.end_byte + fn.frag.offset]:
                continue
            if fn.name == step["after_call"]:
                continue
            last = None
            for stmt in body.named_children:
                if needle in pf.src[stmt.start_byte + fn.frag.offset:stmt.end_byte + fn.frag.offset]:
                    last = stmt
            if last is None:
                continue
            m = re.search(r"(\w+(?:->|\.)arch)(?:\.|->)\w+", pf.text(last, fn.frag))
            arch = m.group(1) if m else "vcpu->arch"
            walker = getattr(names, info.walker)
            stmt, lead = f"\t{arch}.{step['member']}.w = &{arch}.{walker};\n", ""
            if stmt.strip().encode() in pf.src[body.start_byte + fn.frag.offset:body.end_byte + fn.frag.offset]:
                continue  # attached already (a second run)
            nxt = last.next_named_sibling
            if last.type in _NO_FALL_THROUGH:
                # `return create(...);`: nothing after it runs, so the attachment goes first,
                # set apart (it needs no result of the call: the walker is the vCPU's own).
                pos = pf.src.rfind(b"\n", 0, last.start_byte + fn.frag.offset) + 1
                out.append(Edit(pf.rel, pos, pos, stmt + "\n", step["id"], step["why"], "",
                                pf.src.count(b"\n", 0, pos) + 1))
                continue
            if nxt is not None and nxt.type == "if_statement":
                # Not between `ret = create(...)` and its `if (ret)`: after the check, set apart.
                last, lead = nxt, "\n"
            pos = pf.src.find(b"\n", last.end_byte + fn.frag.offset) + 1
            out.append(Edit(pf.rel, pos, pos, lead + stmt,
                            step["id"], step["why"], "", pf.src.count(b"\n", 0, pos) + 1))
    return out


def _edit(pf, frag, start: int, end: int, new: str, rule: str, why: str) -> Edit:
    s, e = start + frag.offset, end + frag.offset
    return Edit(pf.rel, s, e, new, rule, why, pf.src[s:e].decode("utf-8", "replace"),
                pf.src.count(b"\n", 0, s) + 1)


def _attach_walker(files, defs, rules, names, ctx, step) -> list[Edit]:
    out: list[Edit] = []
    fname = step["function"]
    for fn in defs.get(fname, []):
        pf = files[fn.file]
        decl = fn.node.child_by_field_name("declarator")
        while decl is not None and decl.type != "function_declarator":
            decl = decl.child_by_field_name("declarator")
        params = decl.child_by_field_name("parameters")
        if f"struct {rules.types['walker']}" in pf.text(params, fn.frag):
            continue  # a half-done tree: this definition already takes its walker
        close = params.end_byte - 1
        out.append(_edit(pf, fn.frag, close, close, ", " + step["param"], step["id"], step["why"]))
        body = fn.node.child_by_field_name("body")
        first = next((c for c in body.named_children if c.type != "comment"), None)
        mmu_name = next((v.name for v in fn.params if v.index == step.get("mmu_param", 1)), "mmu")
        stmt = step["statement"].replace("mmu->", f"{mmu_name}->")
        if first is not None and first.type == "declaration":
            # After the declarations: kernel style keeps them first.
            last = first
            while last.next_named_sibling is not None and last.next_named_sibling.type == "declaration":
                last = last.next_named_sibling
            pos = pf.src.find(b"\n", last.end_byte + fn.frag.offset) + 1 - fn.frag.offset
            out.append(_edit(pf, fn.frag, pos, pos, f"\n\t{stmt}\n", step["id"], step["why"]))
        elif first is not None:
            line_start = pf.src.rfind(b"\n", 0, first.start_byte + fn.frag.offset) + 1 - fn.frag.offset
            out.append(_edit(pf, fn.frag, line_start, line_start, f"\t{stmt}\n\n", step["id"], step["why"]))
    # Calls: pass the walker of the MMU being created.
    needle = fname.encode()
    for fns in defs.values():
        for fn in fns:
            pf = files[fn.file]
            if needle not in pf.src[fn.node.start_byte + fn.frag.offset:fn.node.end_byte + fn.frag.offset]:
                continue
            stack = [fn.node]
            while stack:
                node = stack.pop()
                stack.extend(node.children)
                if node.type != "call_expression" or text(node.child_by_field_name("function")) != fname:
                    continue
                args = [c for c in node.child_by_field_name("arguments").named_children if c.type != "comment"]
                idx = step.get("mmu_param", 1)
                if len(args) <= idx:
                    continue
                passed = (re.search(r"arch(?:\.|->)(\w+)\s*\Z", pf.text(a, fn.frag)) for a in args[idx + 1:])
                if any(m and m.group(1) in (names.gva, names.ngpa) for m in passed):
                    continue  # a half-done tree: the walker is already passed
                m = re.search(r"arch(?:\.|->)(\w+)\s*\Z", pf.text(args[idx], fn.frag))
                info = rules.vcpu_old.get(m.group(1)) if m else None
                if info is None or info.walker is None:
                    ctx.humans.append(_human(pf, fn, node, f"{fname}(): cannot tell which walker this MMU gets"))
                    continue
                walker = getattr(names, info.walker)
                arch = re.sub(r"(?:\.|->)\w+\s*\Z", "", pf.text(args[idx], fn.frag).lstrip("& "))
                close = node.child_by_field_name("arguments").end_byte - 1
                out.append(_edit(pf, fn.frag, close, close, f", &{arch}.{walker}", step["id"], step["why"]))
    return out


def _human(pf, fn, node, why):
    from refactor.plan.edits import Human

    return Human(pf.rel, pf.src.count(b"\n", 0, node.start_byte + fn.frag.offset) + 1, why)

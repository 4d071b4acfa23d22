"""A walker parameter used only for its page format takes the format
(rules/restructure.toml [[format_param]]), on the rewritten code.

FNAME(is_rsvd_bits_set)(w, gpte, level) only passes `&w->fmt` on: it checks
an entry against a page format, whoever's.  As upstream writes it, it takes
`struct kvm_page_format *fmt` and its callers pass `&w->fmt`.  Applied to
static functions whose name is only ever called (never taken as a value), in
the file that defines them, where the parameter's every use is `&p->fmt` and
the function does not use the name `fmt` already.
"""
from __future__ import annotations

import re

from tree_sitter import Node

from refactor.frontend.ctype import function_params, text, walk_nodes
from refactor.frontend.parse import parse
from refactor.index.functions import top_level
from refactor.index.program import function_name
from refactor.plan.edits import Edit
from refactor.rules import Rules, WalkerNames


def _format_uses(body: Node, pname: str, member: str) -> list[Node] | None:
    """The `&pname->member` nodes, or None when pname is used any other way."""
    out = []
    for n in walk_nodes(body):
        if n.type != "identifier" or text(n) != pname:
            continue
        fe, amp = n.parent, n.parent.parent if n.parent is not None else None
        if fe is None or fe.type != "field_expression" or text(fe.child_by_field_name("field")) != member \
                or amp is None or amp.type != "pointer_expression" or not text(amp).startswith("&"):
            return None
        out.append(amp)
    return out


def plan_format_params(rel: str, data: bytes, rules: Rules, names: WalkerNames) -> list[Edit]:
    edits: list[Edit] = []
    off = rules.stage.restructure_off if rules.stage is not None else frozenset()
    walker_t = f"struct {rules.types['walker']}"
    for rule in rules.restructure.get("format_param", []):
        p = rule.params
        member, name = p.get("member", "fmt"), p.get("name", "fmt")
        if rule.id in off or f"&".encode() not in data or walker_t.encode() not in data:
            continue
        format_t = f"struct {rules.types[p.get('type_key', 'format')]}"

        def add(s, e, new):
            edits.append(Edit.span(rel, data, s, e, new, rule.id, names.fill(rule.why)))

        root = parse(rel, data, want_macros=False).main.tree.root_node
        fns = [n for n in top_level(root) if n.type == "function_definition"]
        for fn in fns:
            if not re.match(r"\s*static\b", text(fn)):
                continue
            fname = function_name(fn)
            body = fn.child_by_field_name("body")
            params = function_params(fn)
            for idx, prm in enumerate(params):
                m = re.fullmatch(rf"{re.escape(walker_t)}\s*\*\s*(\w+)", text(prm).strip())
                if m is None:
                    continue
                uses = _format_uses(body, m.group(1), member)
                if not uses or any(n.type == "identifier" and text(n) == name for n in walk_nodes(body)):
                    continue
                calls, ok = [], True
                for n in walk_nodes(root):
                    if n.type == "call_expression" and re.sub(r"\s", "", text(n.child_by_field_name("function"))) \
                            == re.sub(r"\s", "", fname):
                        calls.append(n)
                # Every mention of the name is the definition or a call.
                mentions = len(re.findall(rf"(?<![\w]){re.escape(fname)}(?![\w])", data.decode("utf-8", "replace")))
                if mentions != len(calls) + 1:
                    ok = False
                args = []
                for c in calls:
                    a = [x for x in c.child_by_field_name("arguments").named_children if x.type != "comment"]
                    if len(a) <= idx:
                        ok = False
                        break
                    args.append(a[idx])
                if not ok:
                    continue
                add(prm.start_byte, prm.end_byte, f"{format_t} *{name}")
                for u in uses:
                    add(u.start_byte, u.end_byte, name)
                for a in args:
                    t = text(a)
                    if re.fullmatch(r"&\s*[\w>.\-]+", t):
                        new = f"{t}.{member}"
                    elif re.fullmatch(r"[\w>.\-]+", t):
                        new = f"&{t}->{member}"
                    else:
                        new = f"&({t})->{member}"
                    add(a.start_byte, a.end_byte, new)
                break
    return edits


def _const_walker(caller: Node, arg: Node, vcpu_arg: Node, mmu_walkers: dict[str, str]) -> str | None:
    """The vCPU walker member an argument always is: `&V->arch.W`, a local set to it, or
    `L->w` of a local L set to a vCPU MMU (`mmu_walkers`: MMU member -> its walker)."""
    t = re.sub(r"\s", "", text(arg))
    v = re.escape(re.sub(r"\s", "", text(vcpu_arg)))
    m = re.fullmatch(rf"&{v}->arch\.(\w+)", t)
    if m:
        return m.group(1)
    local = re.fullmatch(r"(\w+)(->w)?", t)
    if local is None:
        return None
    body = caller.child_by_field_name("body")
    src = text(body)
    d = re.search(rf"\*\s*{local.group(1)}\s*=\s*&\s*{v}\s*->\s*arch\.(\w+)\s*;", src)
    if d is None or re.search(rf"\b{local.group(1)}\s*=[^=]", src[d.end():]):
        return None
    return mmu_walkers.get(d.group(1)) if local.group(2) else d.group(1)


def plan_const_walker_params(rel: str, data: bytes, rules: Rules, names: WalkerNames) -> list[Edit]:
    edits: list[Edit] = []
    off = rules.stage.restructure_off if rules.stage is not None else frozenset()
    walker_t = f"struct {rules.types['walker']}"
    walkers = {names.gva, names.ngpa}
    mmu_walkers = {n: getattr(names, m.walker) for n, m in rules.vcpu_old.items()
                   if m.kind == "mmu" and m.walker and not m.removed}
    for rule in rules.restructure.get("const_walker_param", []):
        if rule.id in off or walker_t.encode() not in data:
            continue

        def add(s, e, new):
            edits.append(Edit.span(rel, data, s, e, new, rule.id, names.fill(rule.why)))

        root = parse(rel, data, want_macros=False).main.tree.root_node
        fns = [n for n in top_level(root) if n.type == "function_definition"]
        for fn in fns:
            if not re.match(r"\s*static\b", text(fn)):
                continue
            fname, params = function_name(fn), function_params(fn)
            vidx = next((i for i, x in enumerate(params)
                         if re.fullmatch(r"struct\s+kvm_vcpu\s*\*\s*\w+", text(x).strip())), None)
            widx = next((i for i, x in enumerate(params)
                         if re.fullmatch(rf"{re.escape(walker_t)}\s*\*\s*\w+", text(x).strip())), None)
            if vidx is None or widx is None:
                continue
            pname = re.search(r"(\w+)\s*$", text(params[widx])).group(1)
            if not _format_uses(fn.child_by_field_name("body"), pname, rule.params.get("member", "fmt")):
                continue  # the walker itself is used: which one it is stays the caller's choice
            calls = [(c, caller) for caller in fns for c in walk_nodes(caller)
                     if c.type == "call_expression" and text(c.child_by_field_name("function")) == fname]
            mentions = len(re.findall(rf"(?<!\w){re.escape(fname)}(?!\w)", data.decode("utf-8", "replace")))
            if not calls or mentions != len(calls) + 1:
                continue
            seen = set()
            for c, caller in calls:
                a = [x for x in c.child_by_field_name("arguments").named_children if x.type != "comment"]
                seen.add(_const_walker(caller, a[widx], a[vidx], mmu_walkers) if len(a) == len(params) else None)
            if len(seen) != 1 or not seen <= walkers:
                continue
            member = seen.pop()
            vname = re.search(r"(\w+)\s*$", text(params[vidx])).group(1)
            _drop(add, params, widx, data)
            for n in walk_nodes(fn.child_by_field_name("body")):
                if n.type != "identifier" or text(n) != pname:
                    continue
                fe = n.parent
                if fe is not None and fe.type == "field_expression" and fe.child_by_field_name("argument") == n:
                    add(n.start_byte, fe.child_by_field_name("operator").end_byte if
                        fe.child_by_field_name("operator") else n.end_byte + 2, f"{vname}->arch.{member}.")
                else:
                    add(n.start_byte, n.end_byte, f"&{vname}->arch.{member}")
            for c, _ in calls:
                _drop(add, [x for x in c.child_by_field_name("arguments").named_children if x.type != "comment"],
                      widx)
    return edits


def _drop(add, items: list[Node], idx: int, data: bytes | None = None) -> None:
    """Remove items[idx] of a comma-separated list with its separator; with `data`, a
    continuation line it started is aligned under the open parenthesis again."""
    if idx + 1 < len(items):
        start, end = items[idx].start_byte, items[idx + 1].start_byte
        ls = data.rfind(b"\n", 0, start) + 1 if data is not None else start
        if data is not None and idx > 0 and not data[ls:start].strip() and b"\n" not in data[start:end]:
            paren = items[0].parent.start_byte
            col = len(data[data.rfind(b"\n", 0, paren) + 1:paren + 1].decode("utf-8", "replace").expandtabs(8))
            start = ls
            add(start, end, "\t" * (col // 8) + " " * (col % 8))
            return
        add(start, end, "")
    else:
        add(items[idx - 1].end_byte, items[idx].end_byte, "")

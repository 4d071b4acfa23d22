"""A function that takes an MMU only to pick it by its walker takes the walker
(rules/restructure.toml [[walker_param]]), on the rewritten code.

kvm_mmu_invalidate_addr() takes a struct kvm_mmu * and tests which one it got
(`mmu != &vcpu->arch.guest_mmu`: a GVA, else an nGPA).  With one walker per
MMU (root_mmu.w == &{gva}, guest_mmu.w == &{ngpa}) the caller passes the
walker, the test asks which walker it got, and each branch names its MMU: the
same MMU as before for every caller, since each MMU is attached to its own
walker from creation on.  Callers pass the walker of the MMU they passed
(`&vcpu->arch.root_mmu` -> `&vcpu->arch.{gva}`, any other MMU pointer -> `->w`);
prototypes follow.  Applied only where the function's shape is the one the
rule describes (one struct kvm_mmu * parameter at `param`, one test of it
against a vCPU MMU member); anything else is left as it is.
"""
from __future__ import annotations

import re

from tree_sitter import Node

from refactor.frontend.ctype import text, walk_nodes as _walk, function_params as _params
from refactor.frontend.parse import parse
from refactor.index.functions import top_level
from refactor.index.program import function_name
from refactor.plan.edits import Edit
from refactor.rules import Rules, WalkerNames


def _edit(rel, data, start, end, new, rule) -> Edit:
    return Edit.span(rel, data, start, end, new, rule.id, rule.why)


def _other(rules: Rules, member: str) -> str | None:
    """The other vCPU MMU that has a walker of its own (root_mmu <-> guest_mmu)."""
    me = rules.vcpu_old.get(member)
    return next((n for n, m in rules.vcpu_old.items() if m.kind == "mmu" and m.walker
                 and n != member and me is not None and m.walker != me.walker), None)


def plan_walker_param(rel: str, data: bytes, rules: Rules, names: WalkerNames) -> list[Edit]:
    edits: list[Edit] = []
    mmu_t = f"struct {rules.types['mmu']}"
    walker_t = f"struct {rules.types['walker']}"
    off = rules.stage.restructure_off if rules.stage is not None else frozenset()
    for rule in rules.restructure.get("walker_param", []):
        if rule.id in off:
            continue  # a later step of the series brings it in (steps.toml restructure)
        fnames = rule.params["function"]
        fnames = [fnames] if isinstance(fnames, str) else list(fnames)
        if not any(f.encode() in data for f in fnames):
            continue
        idx, wname = rule.params.get("param", 1), rule.params.get("name", "w")
        root = parse(rel, data, want_macros=False).main.tree.root_node
        for node in top_level(root):
            is_def = node.type == "function_definition"
            if node.type not in ("function_definition", "declaration"):
                continue
            name = function_name(node) if is_def else None
            if not is_def:
                m = re.search(r"\b(\w+)\s*\(", text(node))
                name = m.group(1) if m else None
            if name not in fnames:
                continue
            params = _params(node)
            if len(params) <= idx or not re.fullmatch(rf"{re.escape(mmu_t)}\s*\*\s*\w+", text(params[idx])):
                continue
            pname = re.search(r"(\w+)\s*$", text(params[idx])).group(1)
            if not is_def:
                edits.append(_edit(rel, data, params[idx].start_byte, params[idx].end_byte,
                                   f"{walker_t} *{wname}", rule))
                continue
            body = node.child_by_field_name("body")
            test = None
            for n in _walk(body):
                if n.type == "if_statement":
                    m = re.fullmatch(rf"\(\s*{pname}\s*(!=|==)\s*&(\w+(?:->|\.)arch)\.(\w+)\s*\)",
                                     text(n.child_by_field_name("condition")))
                    if m and _other(rules, m.group(3)):
                        test = (n, m)
                        break
            if test is None or n.child_by_field_name("alternative") is not None \
                    or n.child_by_field_name("consequence").type != "compound_statement" \
                    or any(t.type == "identifier" and text(t) == wname for t in _walk(node)) \
                    or any(t.type == "assignment_expression" and text(t.child_by_field_name("left")) == pname
                           for t in _walk(body)):
                continue
            ifs, m = test
            op, arch, member = m.group(1), m.group(2), m.group(3)
            other = _other(rules, member)
            # != member: the branch is the other MMU's; == member: the branch is member's.
            then_mmu, else_mmu = (other, member) if op == "!=" else (member, other)
            then_walker = getattr(names, rules.vcpu_old[then_mmu].walker)
            edits.append(_edit(rel, data, params[idx].start_byte, params[idx].end_byte,
                               f"{walker_t} *{wname}", rule))
            first = next(c for c in body.named_children if c.type != "comment")
            line = data.rfind(b"\n", 0, first.start_byte) + 1
            indent = re.match(rb"[ \t]*", data[line:]).group().decode()
            edits.append(_edit(rel, data, line, line, f"{indent}{mmu_t} *{pname};\n"
                               + ("" if first.type == "declaration" else "\n"), rule))
            cond = ifs.child_by_field_name("condition")
            edits.append(_edit(rel, data, cond.start_byte, cond.end_byte,
                               f"({wname} == &{arch}.{then_walker})", rule))
            cons = ifs.child_by_field_name("consequence")
            close = data.rfind(b"\n", 0, cons.end_byte - 1) + 1  # the line of the closing brace
            inner = indent + "\t"
            edits.append(_edit(rel, data, close, cons.end_byte,
                               f"\n{inner}{pname} = &{arch}.{then_mmu};\n{indent}}} else {{\n"
                               f"{inner}{pname} = &{arch}.{else_mmu};\n{indent}}}", rule))
        # Calls: the walker of the MMU passed.
        for n in _walk(root):
            if n.type != "call_expression" or text(n.child_by_field_name("function")) not in fnames:
                continue
            args = [a for a in n.child_by_field_name("arguments").named_children if a.type != "comment"]
            if len(args) <= idx:
                continue
            a = text(args[idx])
            if re.search(rf"\b{re.escape(walker_t)}\b", a) or re.search(r"(?:->|\.)w\s*$", a):
                continue
            m = re.fullmatch(r"&(\w+(?:->|\.)arch)\.(\w+)", re.sub(r"\s+", "", a))
            info = rules.vcpu_old.get(m.group(2)) if m else None
            if m and info is not None and info.kind == "mmu" and info.walker:
                new = f"&{m.group(1)}.{getattr(names, info.walker)}"
            elif re.fullmatch(r"[\w>.\-]+", a) and not m:
                new = _address_walker(n, args, rule, names) or f"{a}->w"
            else:
                continue
            edits.append(_edit(rel, data, args[idx].start_byte, args[idx].end_byte, new, rule))
    return edits


def _address_walker(call: Node, args: list[Node], rule, names: WalkerNames) -> str | None:
    """The walker an address's declared type names (rule `address_walker`: gva_t -> {gva})."""
    types, idx = rule.params.get("address_walker", {}), rule.params.get("address")
    fn = call.parent
    while fn is not None and fn.type != "function_definition":
        fn = fn.parent
    if fn is None or idx is None or len(args) <= idx or args[0].type != "identifier" \
            or args[idx].type != "identifier":
        return None
    for p in _params(fn):
        m = re.fullmatch(rf"(\w+)\s+{re.escape(text(args[idx]))}", text(p).strip())
        if m and m.group(1) in types:
            return f"&{text(args[0])}->arch.{getattr(names, types[m.group(1)])}"
    return None


def apply_walker_params(results: dict[str, bytes], rules: Rules, names: WalkerNames, apply) -> list[Edit]:
    """Apply to every rewritten file, all or nothing per rule: callers and prototypes
    change only when the definition itself had the shape the rule describes."""
    done: list[Edit] = []
    planned = {rel: plan_walker_param(rel, data, rules, names) for rel, data in results.items()}
    converted = {e.rules[0] for edits in planned.values() for e in edits if e.new.endswith("}")
                 and " else {" in e.new}
    for rel, edits in planned.items():
        edits = [e for e in edits if e.rules[0] in converted]
        if edits:
            results[rel] = apply(results[rel], edits)
            done += edits
    return done

"""An MMU local kept for its walker gives way to a walker local
(rules/restructure.toml [[mmu_local]]), on the rewritten code.

The rewrite turns `struct kvm_mmu *mmu = vcpu->arch.walk_mmu;` into
`struct kvm_mmu *mmu = &vcpu->arch.root_mmu;` where the function also needs an
MMU (load_pdptrs() frees its roots), and reaches the walker as `mmu->w`.  When
the local is passed as an MMU only once and otherwise only reaches its walker,
it was there for the walker: it becomes `struct kvm_pagewalk *w =
&vcpu->arch.{gva};` (the walker of that MMU, under the name of a local that
holds it already if there is one), and the one MMU use names the MMU (`&vcpu->arch.root_mmu`), re-wrapped at the
rule's width when it gets longer.  A local that is reassigned, used for
anything else (a field of the MMU), or never reaching the walker through ->w
(another local holds it), is left alone.
"""
from __future__ import annotations

import re

from tree_sitter import Node

from refactor.frontend.ctype import text, walk_nodes
from refactor.frontend.parse import parse
from refactor.index.functions import top_level
from refactor.plan.edits import Edit
from refactor.plan.parameterize import fill_args
from refactor.rules import Rules, WalkerNames


def _edit(rel, data, start, end, new, rule, names) -> Edit:
    return Edit.span(rel, data, start, end, new, rule.id, names.fill(rule.why))


def plan_mmu_locals(rel: str, data: bytes, rules: Rules, names: WalkerNames) -> list[Edit]:
    edits: list[Edit] = []
    off = rules.stage.restructure_off if rules.stage is not None else frozenset()
    mmu_t, walker_t = f"struct {rules.types['mmu']}", f"struct {rules.types['walker']}"
    for rule in rules.restructure.get("mmu_local", []):
        if rule.id in off or mmu_t.encode() not in data:
            continue
        decl_re = re.compile(rf"{re.escape(mmu_t)}\s*\*\s*(\w+)\s*=\s*&\s*(\w+(?:->|\.)arch)\.(\w+)\s*;")
        for fn in top_level(parse(rel, data, want_macros=False).main.tree.root_node):
            if fn.type != "function_definition":
                continue
            body = fn.child_by_field_name("body")
            for decl in [c for c in body.named_children if c.type == "declaration"]:
                m = decl_re.fullmatch(text(decl).strip())
                info = rules.vcpu_old.get(m.group(3)) if m else None
                if info is None or info.kind != "mmu" or not info.walker:
                    continue
                edits += _split(rel, data, body, decl, m, getattr(names, info.walker), rule, names, walker_t)
    return edits


def _split(rel, data, body: Node, decl: Node, m, walker: str, rule, names, walker_t) -> list[Edit]:
    var, arch, member = m.group(1), m.group(2), m.group(3)
    walker_uses, mmu_uses = [], []
    for n in walk_nodes(body):
        if n.type != "identifier" or text(n) != var or decl.start_byte <= n.start_byte < decl.end_byte:
            continue
        par = n.parent
        if par.type == "field_expression" and text(par.child_by_field_name("field")) == "w":
            walker_uses.append(par)
        elif par.type == "argument_list":
            mmu_uses.append(n)
        else:
            return []  # the MMU itself is read or written: the local is the MMU's
    src = text(body)
    have = re.search(rf"{re.escape(walker_t)}\s*\*\s*(\w+)\s*=\s*&\s*{re.escape(arch)}\.{walker}\s*;", src)
    if len(mmu_uses) != 1 or not walker_uses:
        # Not reaching a walker: an MMU local (init_kvm_shadow_mmu()'s context stays, also
        # where another local holds the walker already).
        return []
    wname = have.group(1) if have else rule.params.get("walker_name", "w")
    if have is None and any(n.type == "identifier" and text(n) == wname for n in walk_nodes(body)):
        return []  # the name is taken
    out = []
    ls = data.rfind(b"\n", 0, decl.start_byte) + 1
    le = data.find(b"\n", decl.end_byte) + 1
    if have is None:
        indent = data[ls:decl.start_byte].decode()
        out.append(_edit(rel, data, ls, le, f"{indent}{walker_t} *{wname} = &{arch}.{walker};\n", rule, names))
    else:
        out.append(_edit(rel, data, ls, le, "", rule, names))
    for u in walker_uses:
        out.append(_edit(rel, data, u.start_byte, u.end_byte, wname, rule, names))
    use = mmu_uses[0]
    mmu = f"&{arch}.{member}"
    call = use.parent.parent
    stmt = call.parent if call is not None else None
    width = rule.params.get("wrap", 80)
    if call is not None and call.type == "call_expression" and stmt is not None \
            and stmt.type == "expression_statement" and b"\n" not in data[stmt.start_byte:stmt.end_byte]:
        ls2 = data.rfind(b"\n", 0, stmt.start_byte) + 1
        indent = data[ls2:stmt.start_byte].decode()
        args = [mmu if a.start_byte == use.start_byte else text(a)
                for a in call.child_by_field_name("arguments").named_children if a.type != "comment"]
        head = f"{indent}{text(call.child_by_field_name('function'))}("
        flat = head + ", ".join(args) + ");"
        new = flat if len(flat.expandtabs(8)) <= width else fill_args(head, args, ");", width)
        out.append(_edit(rel, data, ls2, stmt.end_byte, new, rule, names))
    else:
        out.append(_edit(rel, data, use.start_byte, use.end_byte, mmu, rule, names))
    return out

"""Older trees: hooks upstream replaced by helpers, and restructuring that needs 6.x.

rules/restructure.toml [[hook_helper]]: a function-pointer member of 5.x's
struct kvm_mmu (translate_gpa) whose job upstream gave to a helper taking the
walker (kvm_translate_gpa()).  Runs on the rewritten text, where each hook is
reached through the walker it belongs to (`w->translate_gpa(vcpu, ...)`,
`vcpu->arch.gva_walk.translate_gpa(...)`): the call becomes the helper's, the
writes to the hook and its member go, and the helper is defined where the
tree lacks it.
"""
from __future__ import annotations

import re

from refactor.plan.edits import Edit, Human
from refactor.rules import Rules, WalkerNames

_CHAIN = r"[A-Za-z_]\w*(?:\s*(?:->|\.)\s*[A-Za-z_]\w*)*"


def walker_init_applies(program, rules: Rules) -> bool:
    """[[walker_init]] `requires`: struct kvm_mmu members the restructuring assumes (6.x)."""
    members = program.structs.members.get(rules.types["mmu"], {})
    need = {f for step in rules.restructure.get("walker_init", []) for f in step.get("requires", ())}
    return need <= set(members)


def _texts(plan, files) -> dict[str, bytes]:
    out = {rel: pf.src for rel, pf in files.items()}
    out.update(plan.results)
    return out


def plan_hook_helpers(plan, files, program, rules: Rules, names: WalkerNames) -> None:
    """Apply every [[hook_helper]] whose hook the tree's own struct kvm_mmu has."""
    from refactor.apply.splice import apply

    for step in rules.restructure.get("hook_helper", []):
        fld, helper = step["field"], step["helper"]
        placed = rules.mmu_fields.get(fld)
        if placed is None or not placed.moves_to_walker:
            continue  # not moved yet (a series step before it)
        texts = _texts(plan, files)
        why = names.fill(step.why)
        call = re.compile(rf"(?P<base>{_CHAIN})\s*(?P<op>->|\.)\s*{re.escape(fld)}\s*\(\s*(?P<a0>[^,()]+?)\s*,\s*")
        write = re.compile(rf"^[ \t]*{_CHAIN}\s*(?:->|\.)\s*{re.escape(fld)}\s*=[^;]*;[ \t]*\n", re.M)
        member = re.compile(rf"^[ \t]*[\w ]+\(\s*\*\s*{re.escape(fld)}\s*\)\s*\([^;]*\);[ \t]*\n", re.M)
        defined = re.compile(rf"^[^\n;]*\b{re.escape(helper)}\s*\([^;{{]*\)\s*\{{", re.M)
        have_helper = any(defined.search(t.decode("utf-8", "replace")) for t in texts.values())
        for rel, data in sorted(texts.items()):
            text = data.decode("utf-8", "surrogateescape")
            if fld not in text:
                continue
            edits = []
            for m in call.finditer(text):
                base = re.sub(r"\s+", "", m.group("base"))
                ptr = base if m.group("op") == "->" else f"&{base}"
                edits.append(_edit(text, rel, m.start(), m.end(), f"{helper}({m.group('a0')}, {ptr}, ",
                                   step.id, why))
            for pattern in (write, member):
                for m in pattern.finditer(text):
                    edits.append(_edit(text, rel, m.start(), m.end(), "", step.id, why))
            if edits:
                _commit(plan, rel, data, edits, apply)
        for name in step.get("drop_unused", ()):
            _drop_unused(plan, name, step.id, why, apply)
        if not have_helper:
            _define(plan, files, step, names, why, apply)


def _drop_unused(plan, name: str, rule: str, why: str, apply) -> None:
    """Remove `static ... name(...) {...}` from a rewritten file where nothing else names it."""
    fn = re.compile(rf"\n?^static\b[^;{{}}]*?\b{re.escape(name)}\s*\([^;{{]*\)\s*\n?\{{.*?^\}}[ \t]*\n",
                    re.M | re.S)
    for rel, data in sorted(plan.results.items()):
        text = data.decode("utf-8", "surrogateescape")
        m = fn.search(text)
        if m is None or re.search(rf"\b{re.escape(name)}\b", text[:m.start()] + text[m.end():]):
            continue
        _commit(plan, rel, data, [_edit(text, rel, m.start(), m.end(), "", rule, why)], apply)


def _edit(text: str, rel: str, start: int, end: int, new: str, rule: str, why: str) -> Edit:
    b = text.encode("utf-8", "surrogateescape")
    s = len(text[:start].encode("utf-8", "surrogateescape"))
    e = len(text[:end].encode("utf-8", "surrogateescape"))
    return Edit(rel, s, e, new, rule, why, b[s:e].decode("utf-8", "replace"), text.count("\n", 0, start) + 1)


def _commit(plan, rel: str, data: bytes, edits: list[Edit], apply) -> None:
    plan.post_edits.extend(edits)
    if rel not in plan.originals:
        plan.originals[rel] = data
    plan.results[rel] = apply(data, edits)


def _define(plan, files, step, names: WalkerNames, why: str, apply) -> None:
    rel = step["header"]
    data = plan.results.get(rel, files[rel].src if rel in files else None)
    after = re.compile(rf"^[^\n;]*\b{re.escape(step['after'])}\s*\([^;{{]*\)\s*\n?\{{.*?^\}}[ \t]*\n",
                       re.M | re.S)
    m = after.search(data.decode("utf-8", "surrogateescape")) if data is not None else None
    if m is None:
        plan.humans.append(Human(rel, 0, f"{step['helper']}() is needed ({step.id}) but {step['after']}() "
                                         f"was not found in {rel} to define it after"))
        return
    text = data.decode("utf-8", "surrogateescape")
    body = names.fill(step["definition"]).strip("\n")
    _commit(plan, rel, data, [_edit(text, rel, m.end(), m.end(), "\n" + body + "\n", step.id, why)], apply)

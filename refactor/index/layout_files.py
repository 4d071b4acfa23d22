"""Which layout each file is written in: what a half-done tree still has to do.

A reference is old-layout when it names a removed vcpu-arch member, a struct
kvm_mmu field that moves and is still reached through the MMU, or the old
format type; new-layout when it names a walker, a new member or a new type.
"""
from __future__ import annotations

import re
from collections import Counter

from refactor.rules import Rules


def already_new(ref, rules: Rules) -> bool:
    """`w->fmt.permissions`, `mmu->w->cpu_role`, `vcpu->arch.gva_walk.cpu_role`: new-layout
    text, even where the tree lacks the new struct definitions."""
    f = rules.mmu_fields.get(ref.symbol)
    expr = re.sub(r"\s+", "", ref.expression or "")
    if f is None or not expr.endswith(ref.symbol):
        return False
    if "." in f.path and re.search(rf"(?:\.|->){re.escape(f.path)}\Z", expr):
        return True
    base = re.sub(r"\s+", "", ref.base or "")
    last = re.split(r"\.|->", base)[-1] if base else ""
    return f.dest == "walker" and last in set(rules.new_member_names())


def is_old(ref, rules: Rules) -> bool:
    if ref.context != "code":
        return False
    if ref.kind == "vcpu_member":
        info = rules.vcpu_old.get(ref.symbol)
        return info is not None and info.removed
    if ref.kind == "type":
        return ref.symbol == rules.types["old_format"]
    if ref.kind == "mmu_field" and ref.use != "member-declaration":
        f = rules.mmu_fields.get(ref.symbol)
        moves = f is not None and (f.dest == "walker" or f.path != ref.symbol)
        walker_base = ref.base_type is not None and rules.types["walker"] in ref.base_type
        # `(mmu)->cpu_role` in a #define: the expansion sites say which layout it is.
        macro_param = ref.region == "macro" and ref.base is not None \
            and ref.base.strip().strip("()").strip().isidentifier()
        return moves and not walker_base and not macro_param and not already_new(ref, rules)
    return False


def is_new(ref, rules: Rules) -> bool:
    if ref.context != "code":
        return False
    if ref.kind == "new_name":
        return True
    return ref.kind == "type" and ref.symbol in (rules.types["walker"], rules.types["format"])


def by_file(index, rules: Rules) -> dict[str, tuple[Counter, Counter]]:
    """file -> (old names used, new names used), for files using either."""
    out: dict[str, tuple[Counter, Counter]] = {}
    for ref in index.references:
        old, new = is_old(ref, rules), is_new(ref, rules)
        if old or new:
            counts = out.setdefault(ref.file, (Counter(), Counter()))
            counts[0 if old else 1][ref.symbol] += 1
    return out


def describe(counts: Counter) -> str:
    return ", ".join(f"{name} x{n}" if n > 1 else name for name, n in counts.most_common()) or "-"


def unplaced_members(program, rules: Rules) -> tuple[list[str], list[str]]:
    """Members of the tree's own struct kvm_mmu, and struct kvm_mmu members of struct
    kvm_vcpu_arch, that rules/ does not place."""
    mmu = rules.types["mmu"]
    known = set(rules.mmu_fields) | set(rules.new_fields)
    fields = [n for n in program.structs.members.get(mmu, {}) if n not in known]
    arch = program.structs.members.get(rules.types["vcpu_arch"], {})
    # struct kvm_pagewalk members are the tree's walkers (any names): only MMUs need a rule.
    members = [n for n, t in arch.items() if t.name == f"struct {mmu}" and n not in rules.vcpu_old]
    return fields, members

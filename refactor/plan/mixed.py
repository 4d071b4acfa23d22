"""Half-done trees: type the old code as the old layout, where the headers are already new.

After an interrupted `--in-place` or a hand-started port, a tree's headers
may define struct kvm_pagewalk while some .c files still use walk_mmu and
the old struct kvm_mmu fields.  Those files are planned as in an old tree:
the struct table is given back the old members (each typed as the member it
became, from layout.toml), so the same rules rewrite them, and the headers,
already new, are left alone.
"""
from __future__ import annotations

import copy

from refactor.frontend.ctype import CType
from refactor.rules import Rules


def _resolve(members: dict, path: str, structs: dict) -> CType | None:
    ctype = None
    for part in path.split("."):
        if members is None:
            return None
        ctype = members.get(part)
        if ctype is None:
            return None
        members = structs.get(ctype.struct) if ctype.struct else None
    return ctype


def old_view(program, rules: Rules):
    """A copy of `program` whose struct kvm_mmu and kvm_vcpu_arch also have the old members."""
    view = copy.copy(program)
    view.structs = copy.copy(program.structs)
    structs = {k: dict(v) for k, v in program.structs.members.items()}
    view.structs.members = structs
    mmu_name, walker_name = rules.types["mmu"], rules.types["walker"]
    mmu = structs.setdefault(mmu_name, {})
    walker = structs.get(walker_name, {})
    for name, f in rules.mmu_fields.items():
        if name in mmu:
            continue
        ctype = _resolve(walker if f.dest == "walker" else mmu, f.path, structs)
        if ctype is not None:
            mmu[name] = ctype
    arch = structs.setdefault(rules.types["vcpu_arch"], {})
    for name, member in rules.vcpu_old.items():
        if name not in arch:
            pointer = member.kind in ("walker_pointer", "mmu_pointer")
            arch[name] = CType(f"struct {mmu_name}", 1 if pointer else 0)
    return view


def headers_new(program, rules: Rules) -> bool:
    return rules.types["walker"] in program.structs.members


def walker_fnptrs_as_old(files, rules: Rules) -> dict[str, list[str]]:
    """Function-pointer members of the new struct kvm_pagewalk, with their walker parameters
    spelled as the old struct kvm_mmu * (what the remaining old code passes them)."""
    from refactor.index.functions import fnptr_params

    walker_ptr, mmu_ptr = f"struct {rules.types['walker']} *", f"struct {rules.types['mmu']} *"
    return {name: [mmu_ptr if t == walker_ptr else t for t in params]
            for name, params in fnptr_params(files, rules.types["walker"]).items()}


def mixed_walkers(index, rules: Rules) -> set[str]:
    """The walker names a half-done tree already uses: its struct's, else its code's."""
    if index.layout != "mixed":
        return set()
    if index.walkers:
        return set(index.walkers)
    known = {n for p in rules.presets.values() for n in p.as_dict().values()}
    return {r.symbol for r in index.references
            if r.context == "code" and r.kind == "new_name" and r.symbol in known}

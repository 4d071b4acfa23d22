"""What the target function's pointer locals hold, for pairing the patch's lines with its lines.

5.10 calls through `vcpu->arch.walk_mmu` where 6.1 and 7.2 hold it in `struct
kvm_mmu *mmu = vcpu->arch.walk_mmu;` and 7.3 in `struct kvm_pagewalk *gva_walk =
&vcpu->arch.gva_walk;`.  A local declared with its value and never assigned again
is that value: a patch's chain written out through the value is the target's
chain through the local (refactor/port/align.py Learner, `port-local-names`),
and a chain through any other object is not a renaming of the local.
"""
from __future__ import annotations

import re

_IDENT = re.compile(r"[A-Za-z_]\w*")
_INIT = re.compile(r"^\s*(?:const\s+)?struct\s+\w+\s*\*\s*(\w+)\s*=\s*([^;]+);\s*$")


def local_inits(lines: list[str]) -> dict[str, str]:
    """name -> value (blanks squashed) of the pointer locals declared with their value in `lines`
    and never assigned again."""
    found = {m.group(1): re.sub(r"\s+", "", m.group(2)) for x in lines for m in [_INIT.match(x)] if m}
    text = "\n".join(lines)
    return {v: init for v, init in found.items()
            if not re.search(rf"(?<![\w>.&*]){re.escape(v)}\s*=[^=]", text)}


def through_local(inits: dict[str, str], a: str, b: str) -> bool:
    """Whether the target's chain `b` reaches, through a local, what the patch's chain `a`
    writes out (`mmu->gva_to_gpa` for `vcpu->arch.walk_mmu->gva_to_gpa` after `struct kvm_mmu
    *mmu = vcpu->arch.walk_mmu;`; `gva_walk` for `&vcpu->arch.gva_walk`)."""
    for var, init in inits.items():
        if b == var and a == init:
            return True
        if not b.startswith(var + "->"):
            continue
        base = init[1:] + "." if init.startswith("&") else init + "->"
        if a == base + b[len(var) + 2:]:
            return True
    return False


def other_than_local(inits: dict[str, str], a: str, b: str) -> bool:
    """Whether the patch's chain `a` reaches through another member of the same object what
    the target's `b` reaches through a local holding a known value (`vcpu->arch.mmu->gva_to_gpa`
    against `mmu->gva_to_gpa` after `struct kvm_mmu *mmu = vcpu->arch.walk_mmu;`): that is no
    renaming, whatever the layout names say.  A chain from another variable (`mmu->w->fmt` for
    `&w->fmt`: the function's parameter renamed) may be one, and is left to the other tests."""
    for var, init in inits.items():
        rest = b[len(var) + 2:]
        if b == var:
            base = a
        elif b.startswith(var + "->") and a.endswith("->" + rest):
            base = a[:len(a) - len(rest) - 2]
        elif b.startswith(var + "->") and a.endswith("." + rest):
            base = a[:len(a) - len(rest) - 1]
        else:
            continue
        heads = [_IDENT.match(x.lstrip("&")) for x in (base, init)]
        return (not _IDENT.fullmatch(base) and all(heads) and heads[0].group(0) == heads[1].group(0)
                and base.lstrip("&") != init.lstrip("&"))
    return False


def declares_held(tlines: list[str], j: int, inits: dict[str, str], chains: set[str]) -> bool:
    """Whether target line `j` declares a local that one of the target's `chains` goes through
    (the target's `struct kvm_mmu *mmu = vcpu->arch.walk_mmu;` where the patch writes
    `vcpu->arch.walk_mmu` out), or is the blank line that sets such a declaration off."""
    used = {var for var in inits for c in chains if c == var or c.startswith(var + "->")}
    if not used:
        return False
    line = tlines[j] if tlines[j].strip() or j == 0 else tlines[j - 1]
    m = _INIT.match(line)
    return bool(m) and m.group(1) in used

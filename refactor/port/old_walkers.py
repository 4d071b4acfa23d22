"""The old layout's counterparts of the new layout's walker locals, for a backport.

On the old layout an MMU is its own walker: a new-layout local that only names a walker or
a page format (`struct kvm_pagewalk *w = mmu->w;`, `struct kvm_page_format *fmt = &w->fmt;`)
has no old counterpart but what it was set to, and a walker local the new layout declares
beside an MMU (`gva_walk` beside init_kvm_tdp_mmu()'s `context`) is that MMU there.
"""
from __future__ import annotations

import re

from refactor.port.lexicon import Vocabulary

HOISTED = re.compile(r"^\s*struct\s+(\w+)\s*\*\s*(\w+)\s*=\s*(.+?);\s*$")
_HEADER_PARAM = re.compile(r"\bstruct\s+\w+\s*\*\s*(\w+)\s*[,)]")


def hoisted(line: str, vocab: Vocabulary) -> tuple[str, str] | None:
    """(variable, initialiser) of a local that only names a walker or a page format:
    `struct kvm_page_format *fmt = &w->fmt;`, `struct kvm_pagewalk *w = mmu->w;`."""
    m = HOISTED.match(line)
    if m and m.group(1) in (vocab.rules.types["walker"], vocab.rules.types["format"]):
        return m.group(2), m.group(3).strip()
    return None


def inline(line: str, var: str, init: str) -> str:
    """`line` with the local `var` replaced by what it was initialised to."""
    if init.startswith("&"):
        deref = init[1:] + "."          # &w->fmt: fmt->x is w->fmt.x
    else:
        deref = init + "->"             # mmu->w: w->x is mmu->w->x
    line = re.sub(rf"(?<![\w>.]){re.escape(var)}\s*->", lambda _m: deref, line)
    return re.sub(rf"(?<![\w>.]){re.escape(var)}(?!\w)", lambda _m: init, line)


def own_walker(mine: list[str], ptypes: dict[str, str], ttypes: dict[str, str], hunk_lines: list[str]) -> str | None:
    """The old layout's counterpart of a walker local the new layout declares outside the hunk
    (`gva_walk` beside init_kvm_tdp_mmu()'s `context`): where the target function has one
    layout-typed variable, an MMU, that MMU is the walker.  `mine`: the hunk's layout-typed
    variables the target function lacks."""
    pointers = [v for v, k in ttypes.items() if k in ("walker", "mmu")]
    if len(mine) != 1 or ptypes.get(mine[0]) != "walker" or len(pointers) != 1 \
            or ptypes.get(pointers[0], "mmu") != "mmu":
        return None
    declares = re.compile(rf"\bstruct\s+\w+\s*\*\s*{re.escape(mine[0])}\b")
    if any(declares.search(t) for t in hunk_lines):
        return None
    return pointers[0]


def inline_removed_locals(lines: list[tuple[str, str, int]], vocab: Vocabulary) -> list[tuple[str, str, int]]:
    """A backported hunk that removes a local only naming a walker or a page format, where the
    patch's function no longer declares that name as a local (it became a parameter, or is not
    used any more: `struct kvm_pagewalk *w = mmu->w;` gone, the parameter `mmu` retyped to `w`):
    on the old layout the function never had the local, so its pre-image is written through
    what the local was set to, and the declaration (with the removed blank line after it) is
    not looked for.  Only in that function: up to its closing brace."""
    out = list(lines)
    drop: set[int] = set()
    for i, (tag, text, _n) in enumerate(lines):
        h = hoisted(text, vocab) if tag == "-" else None
        if h is None:
            continue
        var, init = h
        # Not a declaration the patch replaces by another local (`w = walk_mmu->w` by `gva_walk =
        # &vcpu->arch.gva_walk`): that one pairs with the target's local.
        lo = hi = i
        while lo > 0 and lines[lo - 1][0] in "-+":
            lo -= 1
        while hi + 1 < len(lines) and lines[hi + 1][0] in "-+":
            hi += 1
        if any(g == "+" and hoisted(t, vocab) for g, t, _ in lines[lo:hi + 1]):
            continue
        end = next((k for k in range(i + 1, len(lines)) if lines[k][1].startswith("}")), len(lines))
        begin = next((k + 1 for k in range(i - 1, -1, -1) if lines[k][1].startswith("}")), 0)
        word = re.compile(rf"(?<![\w>.]){re.escape(var)}(?!\w)")
        post = [t for g, t, _ in lines[begin:end] if g != "-"]
        # The post-image declares the name again as a local (the patch changes what it holds),
        # or uses it without declaring it as a parameter of the function: not this case.
        if any(HOISTED.match(t) and HOISTED.match(t).group(2) == var for t in post) or any(
                re.match(rf"\s*(?:const\s+)?(?:struct\s+)?\w+\s*\*?\s*{re.escape(var)}\s*[=;]", t) for t in post):
            continue
        brace = next((k for k in range(begin, i) if lines[k][1].startswith("{")), None)
        header = " ".join(t for g, t, _ in lines[begin:brace or begin] if g != "-")
        body = [t for g, t, _ in lines[(brace or begin) + 1:end] if g != "-"]
        if any(word.search(t) for t in body) and var not in _HEADER_PARAM.findall(header):
            continue
        drop.add(i)
        if i + 1 < len(lines) and lines[i + 1][0] == "-" and not lines[i + 1][1].strip():
            drop.add(i + 1)
        for k in range(i + 1, end):
            g, t, n = out[k]
            if g != "+" and k not in drop:
                out[k] = (g, inline(t, var, init), n)
    return [x for k, x in enumerate(out) if k not in drop]

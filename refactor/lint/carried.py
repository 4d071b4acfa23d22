"""What a patch carries over from the lines it replaces is not what it brings in.

A patch is judged on the lines it adds.  A line that changes for another
reason (a local renamed, an argument added) keeps the old-layout names it
already had: `struct rsvd_bits_validate *rsvd_check` -> `... *fmt` still
names the old struct, `struct kvm_mmu *mmu = vcpu->arch.walk_mmu` ->
`... *w = vcpu->arch.walk_mmu->w` still reads walk_mmu.  Those findings are
the old code's, as checkpatch's warnings on old lines are, and a patch of a
series that moves to the new layout one step at a time has them on every
step until the step that removes the name.

So the findings of the patch's removed lines are computed too (the same rules
and layout, on the pre-image), and an added line's finding is dropped when a
removed line of the same file and function had a finding of the same rule
for the same symbol, one for one.  A patch that adds more uses than it
removes still gets the extra ones.
"""
from __future__ import annotations

from collections import Counter

from refactor.frontend.patch import FilePatch


def old_numbers(fp: FilePatch) -> list[list[tuple[str, str, int | None]]]:
    """Per hunk, its lines with the old line number of each context or removed line."""
    out = []
    for h in fp.hunks:
        n = h.old_start if h.old_len else h.old_start + 1
        numbered = []
        for tag, text, _ in h.lines:
            if tag == "+":
                numbered.append((tag, text, None))
            else:
                numbered.append((tag, text, n))
                n += 1
        out.append(numbered)
    return out


def pre_image_sparse(fp: FilePatch) -> bytes:
    """Context and removed lines at their old line numbers, blank lines elsewhere."""
    by_line = {n: t for lines in old_numbers(fp) for tag, t, n in lines if n is not None}
    if not by_line:
        return b""
    return ("\n".join(by_line.get(i, "") for i in range(1, max(by_line) + 1)) + "\n").encode()


def hunk_lines(fp: FilePatch, text: str, side: str) -> set[int] | None:
    """Line numbers in `text` of the hunks' `side` lines ("-": pre-image, "+": post-image).

    Each hunk is looked for near its header's position (shifted by the hunks before
    it), as `patch` finds it; None when one cannot be found."""
    other = "+" if side == "-" else "-"
    lines = text.split("\n")
    out: set[int] = set()
    shift = 0
    for h in fp.hunks:
        first, length = (h.old_start, h.old_len) if side == "-" else (h.new_start, h.new_len)
        want = [t for tag, t, _ in h.lines if tag != other]
        start = (first - 1 if length else first) + shift
        at = next((start + d for d in sorted(range(-50, 51), key=abs)
                   if start + d >= 0 and lines[start + d:start + d + len(want)] == want), None)
        if at is None:
            return None
        shift = at - (first - 1 if length else first)
        out |= {at + i + 1 for i, (tag, _, _) in enumerate(t for t in h.lines if t[0] != other)
                if tag == side}
    return out


def removed_lines(fp: FilePatch, original: str | None) -> set[int]:
    """Line numbers of the removed lines in the pre-image (where the hunks match `original`)."""
    header = {n for lines in old_numbers(fp) for tag, _, n in lines if tag == "-"}
    if original is None:
        return header
    found = hunk_lines(fp, original, "-")
    return header if found is None else found


def drop_carried(found: list, before: list, renamed: dict[str, str]) -> list:
    """`found` (added lines) minus what `before` (removed lines) already had, one for one.

    The key is file (pre-image paths mapped through `renamed`), function, rule
    and symbol; a finding without a symbol is always kept.
    """
    had = Counter((renamed.get(f.file, f.file), f.function, f.rule, f.symbol) for f in before if f.symbol)
    out = []
    for f in found:
        key = (f.file, f.function, f.rule, f.symbol)
        if f.symbol and had[key] > 0:
            had[key] -= 1
            continue
        out.append(f)
    return out

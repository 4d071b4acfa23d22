"""Where a hunk's pre-image stands in the target: which file, which line, found how.

The pre-image is looked for as it is (`clean`), translated (`translated`), or
as the most similar window (`fuzzy`), in the patch's file and in every other
file that defines the function the hunk is in (a function moved between
files).  Where the target defines that function, the place must lie in it:
the same lines in another function (kvm_read_guest_virt_helper() and its
write twin) are never the hunk's place, however near or similar.

Lines that stand more than once there are told apart only by where the
hunk is expected: at its own line number on the tree it was made on, or, as
patch(1) learns it, at its line number moved by the offset the file patch's
earlier hunks were found at (`Offsets`).  A candidate is taken only alone
within `WINDOW` lines of that line, below the hunks already placed, and with
every other copy farther from it than the mark is from the hunk (lines the
target added or removed in between could make any nearer copy the place);
otherwise the places are listed as a conflict.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from refactor.frontend.patch import Hunk
from refactor.port.align import best_window, find_all
from refactor.port.target import Target


# How far from the predicted line a candidate may be and still be taken, alone in the window:
# a few lines added or removed between the marks and the hunk, not another copy of its lines.
WINDOW = 3
_DEF_HEAD = re.compile(r"^(?:[A-Za-z_][\w \t\*]*?[\s\*])?(FNAME\(\s*\w+\s*\)|\w+)\s*\(")


@dataclass
class Offsets:
    """Where the lines of one file patch stand in the target, from its hunks already ported:
    marks (line in the patch's numbering, line in the target, what says so), 0-based."""

    marks: list[tuple[int, int, str]] = field(default_factory=list)
    placed_end: int = 0             # target line after the last hunk placed in the file
    # old_start of a hunk placed by a predicted line -> (target file, start, note for its reason)
    chosen: dict[int, tuple[str, int, str]] = field(default_factory=dict)

    def predict(self, hunk: Hunk) -> tuple[int, int, str] | None:
        """The hunk's expected 0-based start in the target, the distance from the mark that says
        so (in the patch's numbering), and what the mark is: the one nearest above the hunk."""
        # Two kinds of mark: an earlier hunk of the file placed in the target (patch(1)'s
        # offset: its last hunk's), and a function's definition line shown by a hunk, which
        # the target defines once in the file (the heading's function start in the target vs
        # where the patch puts it).  Both are computed; the nearest one is taken, as lines
        # added or removed between a mark and the hunk are what makes a prediction wrong, and
        # their number grows with the distance (a mark in the hunk's own function beats one
        # in a function hundreds of lines above).  At the same distance, the placed hunk.
        at = max(hunk.old_start - 1, 0)
        above = [m for m in self.marks if m[0] <= at]
        if not above:
            return None
        p, t, why = max(above, key=lambda m: (m[0], m[2].startswith("the offset")))
        off = t - p
        return at + off, at - p, f"{why} ({off:+d})"

    def settle(self, hunk: Hunk, res, rel: str, target: Target) -> None:
        """Learn from a hunk just ported (a HunkResult `res`) in file `rel`, and say in its
        reason when a predicted line chose its place among copies of its lines, or where it
        pointed when it could not choose."""
        guess = self.predict(hunk) if res.status == "conflict" and res.target_file == rel and (
            res.reason or "").startswith("the hunk's lines stand") else None
        if guess:       # what the offset says, and why it did not choose
            res.reason += (f"; {guess[2]} puts it at line {guess[0] + 1}, {guess[1]} lines below that mark, "
                           "which does not single out one of them")
        lines = target.lines(rel) if target.text(rel) is not None else []
        n = hunk.old_start - 1
        for tag, text, _ in hunk.lines:
            m = _DEF_HEAD.match(text) if tag != "+" else None
            if m and not text.rstrip().endswith(";"):
                name = re.sub(r"\s+", "", m.group(1))
                spans = target.territories(rel, name)
                if len(spans) == 1 and lines[spans[0][0]:spans[0][0] + 1] == [text]:
                    self.marks.append((n, spans[0][0], f"the definition of {name}() in both"))
            n += tag != "+"
        placed = res.status in ("clean", "translated") and res.target_file == rel \
            and res.target_start is not None
        chosen = self.chosen.get(hunk.old_start)
        if placed and chosen and chosen[0] == rel and abs(res.target_start - chosen[1]) <= WINDOW:
            res.reason = f"placed at {rel}:{res.target_start + 1} by {chosen[2]}"
        if placed:      # its last line is the mark: the lines it spans are the same on both sides
            self.marks.append((hunk.old_start - 1 + hunk.old_len, res.target_start + res.target_len,
                               "the offset of the file's earlier hunks"))
            self.placed_end = res.target_start + res.target_len

    def pick(self, found: list[int], hunk: Hunk, frel: str) -> int | None:
        """The one start of `found` the learned offset points at, or None."""
        guess = self.predict(hunk)
        if guess is None:
            return None
        line, gap, why = guess
        # Hunks follow each other in the file and never overlap: a place above the end of the
        # last one placed is none for a later hunk.
        found = [f for f in found if f >= self.placed_end]
        alone = [f for f in found if abs(f - line) <= WINDOW]
        # The offset is only as good as the lines between the mark and the hunk: the target may
        # add or remove some (6.1 has 10 fewer than 7.3 between KVM_SET_IDENTITY_MAP_ADDR and
        # KVM_GET_IRQCHIP, whose copies stand 24 apart).  Another copy is ruled out only where its being the
        # place would take more lines removed, or added, than the patch's tree has between them.
        if len(alone) != 1 or any(abs(f - line) <= max(gap, WINDOW) for f in found if f != alone[0]):
            return None
        self.chosen[hunk.old_start] = (frel, alone[0], why)
        return alone[0]


def locate(hunk: Hunk, rel: str, func: str | None, target: Target, pre_raw: list[str],
            kept: list[str], offsets: Offsets | None = None) -> tuple[str, int | list[int], str] | None:
    """(target file, start line, how) of the hunk's pre-image: exact, translated or fuzzy; or
    (target file, the starts, "ambiguous") when its lines stand more than once there.  With
    `offsets`, lines that stand more than once are told apart by the line the file patch's
    earlier hunks predict (`Offsets.pick`)."""
    candidates = [rel] if target.text(rel) is not None else []
    for frel, _line, _ar in (target.definitions(func) if func else []):
        if frel not in candidates:
            candidates.append(frel)
    # Where the target defines the function the hunk's heading names, the hunk's place is in
    # it: the same lines elsewhere (a read helper and its write twin) belong to another function.
    name = named_function(hunk, func)
    within = {frel: target.territories(frel, name) for frel in candidates} if name else {}
    if any(within.values()) and not within.get(rel) and _declares(target.text(rel) or "", name):
        # The patch's file only declares it (a header's prototypes, git heading the hunk with
        # one of them): the hunk is in that list of declarations, not in the body elsewhere.
        within = {}
    if any(within.values()):
        # The patch's file defining the function is where it is: a function of the same name
        # in another file (a static one of vmx/ and svm/) is another function.
        candidates = [rel] if within.get(rel) else [frel for frel in candidates if within[frel]]
    near = max(hunk.old_start - 1, 0)
    for frel in candidates:
        at_near = near if frel == rel else 0
        for lines, how in ((pre_raw, "clean"), (kept, "translated")):
            found = (find_all(lines, target, frel, at_near, within=within.get(frel) or None)
                     or find_all(lines, target, frel, at_near, exact=False, within=within.get(frel) or None))
            learned = offsets is not None and frel == rel and offsets.predict(hunk) is not None
            if len(found) > 1 and lines and learned:
                # Its number moved by the offset the file's earlier hunks were found at says
                # which, where one copy alone is there (patch(1)'s rule, kept to the function).
                one = offsets.pick(found, hunk, frel)
                return (frel, one, how) if one is not None else (frel, found, "ambiguous")
            if len(found) > 1 and found[0] != near and lines:
                # The same lines twice in the function: the patch's line number says which only
                # on the tree it was made on.  Another tree's numbers are no guide.
                return frel, found, "ambiguous"
            if found:
                return frel, found[0], how
    if name and not any(within.values()) and heads_a_definition(hunk, name):
        # A function the target does not define: lines like its `return;` and `}` elsewhere
        # are not its place (an exact match above may still find it renamed).
        return None
    best = None
    for frel in candidates:
        win = best_window(kept, target, frel, near if frel == rel else 0, within.get(frel) or None)
        if win and win[1] >= 0.5 and (best is None or win[1] > best[3]):
            best = (frel, win[0], "fuzzy", win[1], win[2])
    learned = best is not None and best[0] == rel and offsets is not None and offsets.predict(hunk) is not None
    if best and best[4] and (best[1] != near or learned):
        starts = sorted([best[1]] + best[4])      # as like the hunk, apart
        one = offsets.pick(starts, hunk, best[0]) if learned else None
        return (best[0], one, "fuzzy") if one is not None else (best[0], starts, "ambiguous")
    return best[:3] if best else None


def _declares(text: str, name: str) -> bool:
    """Whether `text` has a prototype of function `name` (its parameter list closed by `;`)."""
    return re.search(rf"^[A-Za-z_][\w \t\*]*?[\s\*]{re.escape(name)}\s*\([^;{{}}]*\)\s*;", text, re.M) is not None


def heads_a_definition(hunk: Hunk, name: str) -> bool:
    """Whether the hunk's heading (or a context line) is the first line of a definition of
    function `name`, not a macro use or a declaration."""
    inner = re.fullmatch(r"FNAME\((\w+)\)", name)
    spelled = rf"FNAME\(\s*{inner.group(1)}\s*\)" if inner else re.escape(name)
    head = re.compile(rf"^(?:[A-Za-z_][\w \t\*]*?[\s\*])?{spelled}\s*\(")
    return any(head.match(t) and not t.rstrip().endswith(";")
               for t in [hunk.section] + [x for g, x, _ in hunk.lines if g != "+"])


def named_function(hunk: Hunk, func: str | None) -> str | None:
    """The function the hunk is in, as the target would spell its definition: paging_tmpl.h's
    `FNAME(name)` for the FNAME its heading shows."""
    if func != "FNAME":
        return func
    inner = next((m.group(1) for t in [x for g, x, _ in hunk.lines if g != "+"] + [hunk.section]
                  for m in [re.search(r"^\S.*\bFNAME\((\w+)\)\s*\(", t)] if m), None)
    return f"FNAME({inner})" if inner else None

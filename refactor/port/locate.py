"""Where a hunk's pre-image stands in the target: which file, which line, found how.

The pre-image is looked for as it is (`clean`), translated (`translated`), or
as the most similar window (`fuzzy`), in the patch's file and in every other
file that defines the function the hunk is in (a function moved between
files).  Where the target defines that function, the place must lie in it:
the same lines in another function (kvm_read_guest_virt_helper() and its
write twin) are never the hunk's place, however near or similar.
"""
from __future__ import annotations

import re

from refactor.frontend.patch import Hunk
from refactor.port.align import best_window, find_all
from refactor.port.target import Target


def locate(hunk: Hunk, rel: str, func: str | None, target: Target, pre_raw: list[str],
            kept: list[str]) -> tuple[str, int | list[int], str] | None:
    """(target file, start line, how) of the hunk's pre-image: exact, translated or fuzzy; or
    (target file, the starts, "ambiguous") when its lines stand more than once there."""
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
    if best and best[4] and best[1] != near:
        return best[0], sorted([best[1]] + best[4]), "ambiguous"   # as like the hunk, apart
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

"""The locals of a ported hunk: which function it is in, the layout-typed variables there,
and the locals that only name a walker or a page format.

Locals are named per function and the two layouts name them differently (`mmu` and
`w`, `rsvd_check` and `fmt`); a local that only names a walker (`struct kvm_pagewalk *w =
mmu->w;`) has no counterpart in an old tree.  These helpers find the function around a
target line and its typed variables, learn the renames a patch's own replaced lines show,
and inline walker-naming locals a backport adds.
"""
from __future__ import annotations

import re

from refactor.frontend.patch import Hunk
from refactor.port.align import Learner
from refactor.port.lexicon import Vocabulary, declared_types


def function_span(tlines: list[str], at: int) -> tuple[int, int]:
    """First and last line of the function around line `at` (by the kernel's layout)."""
    def head(i: int) -> bool:
        return tlines[i][:1].isalpha() and "(" in tlines[i]

    # A hunk that starts at (or just above) a function's first line is in that function,
    # not in the one before it.
    start = at
    for k in range(at, min(at + 4, len(tlines))):
        if head(k):
            start = k + 1
            break
    while start > 0 and not head(start - 1):
        start -= 1
    end = max(at, start)
    while end < len(tlines) and tlines[end] != "}":
        end += 1
    return max(start - 1, 0), end


def target_types(tlines: list[str], at: int, vocab: Vocabulary) -> dict[str, str]:
    """Layout-typed variables of the target function around `at`.

    Declarations say walker or MMU; in an old-layout function, where every
    context is a struct kvm_mmu, the field a variable reaches tells which one
    it is where that field exists in one role only (shadow_zero_check: the
    builder's; guest_rsvd_check: the walker's).
    """
    lo, hi = function_span(tlines, at)
    body = tlines[lo:hi + 1]
    types = declared_types(body, vocab)
    rules = vocab.rules
    for f in rules.mmu_fields.values():
        if f.path == f.name:
            continue
        for m in re.finditer(rf"(\w+)->{re.escape(f.name)}(?!\w)", "\n".join(body)):
            types[m.group(1)] = "walker" if f.moves_to_walker else "mmu"
    return types

HOISTED = re.compile(r"^\s*struct\s+(\w+)\s*\*\s*(\w+)\s*=\s*(.+?);\s*$")


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

DECLARES = re.compile(r"^\s*(?:const\s+)?(?:struct\s+|unsigned\s+)?\w+[\s*]+(\w+)\s*(?:=|;|\[)")


def learn_replaced_locals(hunk: Hunk, pre_t, pair_of: dict[int, int], tlines: list[str], learner: Learner,
                           tr, types: dict[str, str]) -> None:
    """Locals renamed by the layout change in the patch's own replaced lines: a run of
    removed lines followed by as many added ones pairs 1:1, and where an added line differs
    from the target's counterpart of the removed one only by a local's name (`w` for `mmu`,
    `gva_walk` for `mmu`), the target's name is kept.  This is how a patch that moved code to
    the other layout ports back onto it: as nothing."""
    runs: list[tuple[list[int | None], list[str]]] = []
    minus: list[int | None] = []
    plus: list[str] = []
    pi = k = 0
    for tag, text, _ in hunk.lines + [(" ", "", 0)]:
        if tag == "-":
            if plus:
                runs.append((minus, plus))
                minus, plus = [], []
            p = pre_t[pi]
            pi += 1
            if p.dropped:
                minus.append(None)
                continue
            minus.append(pair_of.get(k))
            k += 1
        elif tag == "+":
            plus.append(text)
        else:
            if minus or plus:
                runs.append((minus, plus))
                minus, plus = [], []
            if tag == " " and pi < len(pre_t):
                if not pre_t[pi].dropped:
                    k += 1
                pi += 1
    paired = [(j, t) for m, ps in runs if len(m) == len(ps) for j, t in zip(m, ps) if j is not None]
    # Names the patch declares in lines of its own (not replacing a line) are new locals.
    fresh = {d.group(1) for m, ps in runs if len(m) != len(ps) for t in ps for d in [DECLARES.match(t)] if d}
    for j, text in paired:
        learner.learn_rename(tr(text, types).text, tlines[j], fresh)


def inline_added_locals(hunk: Hunk, vocab: Vocabulary,
                        elsewhere: list[tuple[str, str]] = ()) -> tuple[Hunk, bool]:
    """A backported hunk that adds a local only naming a walker or a page format
    (`struct kvm_pagewalk *w = mmu->w;`) where it adds no removed line's replacement: the old
    layout has no such object (the MMU is its own walker), so its uses are written through
    what it was initialised to and the declaration (with the blank line after it) goes.
    `elsewhere`: such locals another hunk of the same function adds (the declaration at the
    top, the uses further down); they are inlined where this hunk does not declare the name."""
    gone, drop = [], set()
    lines = hunk.lines
    for i, (tag, text, _n) in enumerate(lines):
        h = hoisted(text, vocab) if tag == "+" else None
        if h is None or any(re.search(rf"(?<![\w>.]){re.escape(h[0])}(?!\w)", t) for g, t, _ in lines if g != "+"):
            continue        # the hunk's own code has the local already: not a new one
        k = i
        while k > 0 and lines[k - 1][0] == "+":
            k -= 1
        removed = []
        while k > 0 and lines[k - 1][0] == "-":
            k -= 1
            removed.append(lines[k][1])
        if any(HOISTED.match(r) for r in removed):   # replaces a declaration: a rename, not a new local
            continue
        gone.append(h)
        drop.add(i)
        if i + 1 < len(lines) and lines[i + 1][0] == "+" and not lines[i + 1][1].strip():
            drop.add(i + 1)
    declared = {v for g, t, _ in lines for d in [DECLARES.match(t)] if d for v in [d.group(1)]}
    added = "\n".join(t for g, t, _ in lines if g == "+")
    for var, init in elsewhere:
        if (var, init) not in gone and var not in declared and re.search(rf"(?<![\w>.]){re.escape(var)}(?!\w)", added):
            gone.append((var, init))
    if not gone:
        return hunk, False
    out = []
    for i, (tag, text, n) in enumerate(lines):
        if i in drop:
            continue
        if tag == "+":
            for var, init in gone:
                text = inline(text, var, init)
        out.append((tag, text, n))
    return Hunk(hunk.old_start, hunk.old_len, hunk.new_start, hunk.new_len, hunk.section, out), True


def added_walker_locals(hunk: Hunk, vocab: Vocabulary) -> list[tuple[str, str]]:
    """(variable, initialiser) of the walker or page-format locals `inline_added_locals`
    inlines in this hunk."""
    new, changed = inline_added_locals(hunk, vocab)
    if not changed:
        return []
    return [h for tag, t, n in hunk.lines if tag == "+" for h in [hoisted(t, vocab)] if h
            and not any(t2 == t and g == "+" for g, t2, _ in new.lines)]

"""Pairing a hunk's lines with a target's, and what the pairs teach.

Where a hunk's pre-image stands in a target file (exactly, whitespace aside,
or as the most similar window), which of its lines pair with which of the
target's when lines are missing on either side, and the Learner that turns
differences made only of layout names (a renamed local, a walker reached
another way) into substitutions for the hunk's added lines.  Continuation
lines are re-aligned under their parenthesis as the kernel writes them.
"""
from __future__ import annotations

import difflib
import re

from refactor.port.held import declares_held, local_inits, other_than_local, through_local
from refactor.port.target import Target

_IDENT = re.compile(r"[A-Za-z_]\w*")


def norm(line: str) -> str:
    return " ".join(line.split())


Spans = list[tuple[int, int]] | None


def inside(start: int, n: int, within) -> bool:
    """Whether lines [start, start + n) overlap one of the spans `within` (None: anywhere).
    A hunk's place must overlap the function its heading names: identical lines in another
    function (a read helper and its write twin) are not its place."""
    return within is None or any(start <= hi and start + max(n, 1) - 1 >= lo for lo, hi in within)


def find(pre: list[str], target: Target, rel: str, near: int, exact: bool = True,
         within: Spans = None) -> int | None:
    """Start of `pre` in the target file, nearest to `near` first (whitespace-insensitive if
    not exact), inside the spans `within` when given."""
    lines = target.lines(rel) if exact else target.norm_lines(rel)
    if not pre:
        return min(max(near, 0), len(lines))
    found = find_all(pre, target, rel, near, exact, within)
    return found[0] if found else None


def find_all(pre: list[str], target: Target, rel: str, near: int, exact: bool = True,
             within: Spans = None) -> list[int]:
    """Every start of `pre` in the target file (inside `within`), nearest to `near` first."""
    lines = target.lines(rel) if exact else target.norm_lines(rel)
    key = pre if exact else [norm(x) for x in pre]
    n = len(key)
    starts = target.positions(rel, exact).get(key[0], ())
    return [i for i in sorted(starts, key=lambda i: abs(i - near))
            if lines[i:i + n] == key and inside(i, n, within)]


def best_window(pre: list[str], target: Target, rel: str, near: int,
                within: Spans = None) -> tuple[int, float, list[int]] | None:
    """The window of the target file most like `pre` (same length), the share of equal lines,
    and the starts of other windows, apart from it, that are as like (inside `within`)."""
    n = len(pre)
    view = target.norm_lines(rel)
    if n == 0 or len(view) < n:
        return None
    key = [norm(x) for x in pre]
    index = target.positions(rel, False)
    best, best_score = None, 0.0
    cand: set[int] = set()
    for i, k in enumerate(key):
        if len(k) > 3:
            cand.update(j - i for j in index.get(k, ()) if 0 <= j - i <= len(view) - n
                        and inside(j - i, n, within))
    scores = {}
    for start in cand:
        same = sum(1 for a, b in zip(key, view[start:start + n]) if a == b)
        score = scores[start] = same / n
        if score > best_score or (score == best_score and best is not None
                                  and abs(start - near) < abs(best - near)):
            best, best_score = start, score
    ties = [c for c, sc in scores.items() if best is not None and sc == best_score and abs(c - best) >= n]
    if best is not None and best_score < 0.5 and cand:
        # Lines inserted on the target's side shift the rest of the window: score the most
        # likely starts by the lines that match in order in a longer window.
        slack = min(n, 12)
        for start in sorted(cand, key=lambda c: abs(c - near))[:40]:
            sm = difflib.SequenceMatcher(None, key, view[start:start + n + slack], autojunk=False)
            score = sum(b.size for b in sm.get_matching_blocks()) / n
            if score > best_score:
                best, best_score, ties = start, score, []
    return (best, best_score, ties) if best is not None else None


# Expression chains are compared whole: `&vcpu->arch.root_mmu`, `w->fmt.permissions`.
_CHAIN_TOKEN = re.compile(r"&?[A-Za-z_]\w*(?:\s*(?:->|\.)\s*[A-Za-z_]\w*)*|\d\w*|\S")
_SEP = re.compile(r"(->|\.)")


def chains(line: str) -> list[str]:
    return [re.sub(r"\s+", "", t) for t in _CHAIN_TOKEN.findall(line)]


def base_pair(a: str, b: str) -> tuple[str, str] | None:
    """The differing bases of two chains with the same trailing members:
    (`vcpu->arch.guest_mmu.`, `vcpu->arch.mmu->`) from `...guest_mmu.get_pdptr` and
    `...mmu->get_pdptr`, so that other members reached through that base follow."""
    pa, pb = _SEP.split(a), _SEP.split(b)
    k = 0
    while k < min(len(pa), len(pb)) - 1 and pa[-1 - k] == pb[-1 - k] and _SEP.fullmatch(pa[-1 - k]) is None:
        k += 2 if k + 2 < min(len(pa), len(pb)) else 1
        if k >= min(len(pa), len(pb)):
            return None
    if k == 0:
        return None
    ka, kb = "".join(pa[:len(pa) - k + 1]), "".join(pb[:len(pb) - k + 1])
    return (ka, kb) if ka != kb and ka and kb else None


def _through_member(bp: tuple[str, str], words: set[str]) -> bool:
    """Whether the target's base is the patch's with one layout member more (`vcpu->arch.mmu->`
    -> `vcpu->arch.mmu->w->`): the walker reached through the object, not another name for it."""
    a, b = bp
    if not b.startswith(a) or not a.endswith(("->", ".")):
        return False
    m = re.fullmatch(r"([A-Za-z_]\w*)(?:->|\.)", b[len(a):])
    return bool(m) and m.group(1) in words


def skip(text: str, n: int) -> str:
    """`text` after its first `n` non-blank characters (keeps the rest's own spacing)."""
    seen = 0
    for i, c in enumerate(text):
        if seen == n:
            return text[i:]
        if not c.isspace():
            seen += 1
    return ""


def open_paren(line: str) -> int | None:
    """Display column (tabs of 8) just after the last unclosed '(' of `line`."""
    col, stack = 0, []
    for c in line:
        if c == "(":
            stack.append(col + 1)
        elif c == ")" and stack:
            stack.pop()
        col = (col // 8 + 1) * 8 if c == "\t" else col + 1
    return stack[-1] if stack else None


def indent_col(line: str) -> int:
    col = 0
    for c in line:
        if c == "\t":
            col = (col // 8 + 1) * 8
        elif c == " ":
            col += 1
        else:
            break
    return col


def realign(line: str, patch_prev: str | None, out_prev: str | None) -> str:
    """A continuation line aligned under its opening parenthesis, as the kernel does:
    where the translated line above opens the parenthesis at another column."""
    if patch_prev is None or out_prev is None:
        return line
    was, now = open_paren(patch_prev), open_paren(out_prev)
    if was is None or now is None or was == now or indent_col(line) != was:
        return line
    return "\t" * (now // 8) + " " * (now % 8) + line.lstrip(" \t")


class Learner:
    """Differences between translated patch lines and the target's that the layout explains.

    Learned per hunk (locals are named per function): whole expression chains
    that differ (`&vcpu->arch.root_mmu` for `vcpu->arch.walk_mmu`), renamed
    locals (`w` for `mmu`), and bases reached differently.
    """

    def __init__(self, layout_words: set[str], target_vars: set[str] = frozenset(),
                 target_idents: set[str] = frozenset(), target_lines: list[str] = (),
                 many_to_one: bool = False):
        self.words = layout_words
        # Pointer locals of the target function declared with their value, never assigned again.
        self.inits = local_inits(target_lines)
        # A backport writes one walker as several old objects (`&vcpu->arch.gva_walk` is
        # `vcpu->arch.walk_mmu` or `&vcpu->arch.root_mmu`): another object than a local's
        # value may still be the same one there.
        self.many_to_one = many_to_one
        self.target_vars = target_vars      # layout-typed variables of the target function
        self.target_idents = target_idents  # every identifier of the target function
        self.subs: dict[str, str] = {}
        self.bad: set[str] = set()
        # Struct names of the layout and their kind (pointer: MMU or walker; format): a
        # pair of different kinds is a change of type, never a renaming.
        self.type_kinds: dict[str, str] = {}

    def explained(self, a: str, b: str) -> bool:
        """Names that differ are all layout names (pointer and object forms may differ too),
        or a local the target names differently: the target's name is one of its walker,
        MMU or page-format variables and the patch's name does not occur in the function."""
        ia, ib = set(_IDENT.findall(a)), set(_IDENT.findall(b))
        if not (ia or ib):
            return False
        if self.through_local(a, b):
            return True
        if self.other_than_local(a, b):
            return False
        if a != b and _IDENT.fullmatch(a) and _IDENT.fullmatch(b) and a in self.inits:
            return False    # the target declares its own `a` (`mmu` beside `w = mmu->w`): not renamed
        odd = (ia ^ ib) - self.words
        if not odd:
            return True
        mine, theirs = odd & ia - ib, odd & ib - ia
        if len(mine) == 1 and len(theirs) == 1 and theirs <= self.target_vars and not mine & self.target_idents:
            return True
        # A local renamed to a layout name (rsvd_check -> fmt, mmu -> w): one name each side.
        mine, theirs = ia - ib, ib - ia
        return (len(mine) == 1 and len(theirs) == 1 and theirs <= self.target_vars
                and not mine & self.target_idents and not mine & self.words)

    def through_local(self, a: str, b: str) -> bool:
        return through_local(self.inits, a, b)

    def other_than_local(self, a: str, b: str) -> bool:
        return not self.many_to_one and other_than_local(self.inits, a, b)

    def declares(self, tlines: list[str], j: int) -> bool:
        """Whether target line `j` declares a local that the learnt names go through, or is the
        blank line that sets such a declaration off (refactor/port/held.py)."""
        used = {v for k, v in self.subs.items() if k not in self.bad and through_local(self.inits, k, v)}
        return declares_held(tlines, j, self.inits, used)

    def add(self, a: str, b: str) -> None:
        if a in self.subs and self.subs[a] != b:
            self.bad.add(a)
        self.subs.setdefault(a, b)

    def learn(self, a: str, b: str) -> bool:
        ta, tb = chains(a), chains(b)
        segs = []
        for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, ta, tb, autojunk=False).get_opcodes():
            if op != "equal":
                segs.append((ta[i1:i2], tb[j1:j2]))
        if not segs:
            return True
        for xs, ys in segs:
            if len(xs) != len(ys) or not all(self.explained(x, y) for x, y in zip(xs, ys)):
                return False
            if any(self.type_kinds.get(x, "") != self.type_kinds.get(y, "") for x, y in zip(xs, ys)
                   if x in self.type_kinds or y in self.type_kinds):
                return False
        for xs, ys in segs:
            for x, y in zip(xs, ys):
                self.add(x, y)
                bp = base_pair(x, y)
                if bp and _through_member(bp, self.words):
                    # `X->cpu_role` is the target's `X->w->cpu_role`: only the fields that moved
                    # to the walker go through it (`X->root.hpa` stays), so the chain is learnt,
                    # never its base.
                    continue
                if bp:
                    self.add(bp[0], bp[1])
                    # A renamed local: the bare name follows too (`w` for `context`).
                    na, nb = bp[0].rstrip(">-."), bp[1].rstrip(">-.")
                    if _IDENT.fullmatch(na) and _IDENT.fullmatch(nb):
                        self.add(na, nb)
        return True

    def learn_rename(self, a: str, b: str, fresh: set[str]) -> None:
        """From a line the patch replaces (`b`, as the target has it) and its replacement
        (`a`, translated): only a local the patch renamed the way the layout renames them
        (`mmu` -> `w`, `mmu` -> `gva_walk`).  The patch's name must not occur in the target
        function, the target's must be one of its layout-typed variables, and the patch must
        not declare the name as a new local (`fresh`): anything else the pair changes is the
        patch's own change and stays."""
        ta, tb = chains(a), chains(b)
        if len(ta) != len(tb):
            return
        for x, y in zip(ta, tb):
            if x == y:
                continue
            bx, by = x.split("->")[0].split(".")[0], y.split("->")[0].split(".")[0]
            if (x[len(bx):] != y[len(by):] or not _IDENT.fullmatch(bx) or by not in self.target_vars
                    or bx in self.target_idents or bx in fresh):
                continue
            self.add(bx, by)

    def apply(self, line: str) -> str:
        subs = {k: v for k, v in self.subs.items() if k not in self.bad}
        if not subs:
            return line

        def one(m: re.Match) -> str:
            tok = re.sub(r"\s+", "", m.group(0))
            if tok in subs and tok == m.group(0):
                return subs[tok]
            amp = "&" if tok.startswith("&") else ""
            body = tok[len(amp):]
            # The longest learned base that this chain starts with (a local, or a member path).
            for base in sorted(subs, key=len, reverse=True):
                b = base[len(amp):] if base.startswith("&") == bool(amp) and amp else base
                if base.startswith("&") and not amp:
                    continue
                if body.startswith(b) and (b.endswith(("->", ".")) or body[len(b):].startswith(("->", "."))):
                    new_base = subs[base][1:] if amp and subs[base].startswith("&") else subs[base]
                    return amp + new_base + skip(m.group(0)[len(amp):], len(b))
            return subs.get(tok, m.group(0))

        return _CHAIN_TOKEN.sub(one, line)


def align(kept: list[str], tlines: list[str], start: int) -> tuple[int, int, list[tuple[int, int]],
                                                                   list[int], list[int]]:
    """Pair the hunk's lines with the target's around `start`, allowing lines on either side
    to be missing: (first, end) of the target region, 1:1 pairs (i, j), patch lines the target
    lacks, target lines the patch lacks."""
    lo, hi = max(start - 2, 0), min(start + len(kept) + 12, len(tlines))
    a, b = [norm(x) for x in kept], [norm(x) for x in tlines[lo:hi]]
    ops = difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
    while ops and ops[0][0] == "insert":
        ops.pop(0)
    while ops and ops[-1][0] == "insert":
        ops.pop()
    if not ops:
        return start, start, [], list(range(len(kept))), []
    pairs, missing, extra = [], [], []
    for op, i1, i2, j1, j2 in ops:
        if op in ("equal", "replace") and i2 - i1 == j2 - j1:
            pairs += [(i1 + k, lo + j1 + k) for k in range(i2 - i1)]
            continue
        # Unequal blocks: pair each line with the most similar one still ahead of it.
        j = j1
        for i in range(i1, i2):
            scores = [(difflib.SequenceMatcher(None, a[i], b[k], autojunk=False).ratio(), k)
                      for k in range(j, j2)]
            score, k = max(scores, default=(0.0, None))
            if k is not None and score >= 0.6:
                extra += [lo + x for x in range(j, k)]
                pairs.append((i, lo + k))
                j = k + 1
            else:
                missing.append(i)
        extra += [lo + x for x in range(j, j2)]
    return lo + ops[0][3], lo + ops[-1][4], pairs, missing, extra


def pairings(kept: list[str], tlines: list[str], at: int, how: str):
    """Line pairs of the hunk and the target: 1:1 from `at`, or aligned when lines are missing
    on either side (target lines before the first or after the last pair are outside)."""
    if how != "fuzzy":
        n = min(len(kept), len(tlines) - at)
        return at, at + n, [(k, at + k) for k in range(n)], list(range(n, len(kept))), []
    first, end, pairs, missing, extra = align(kept, tlines, at)
    if pairs:
        lo, hi = pairs[0][1], pairs[-1][1]
        extra = [j for j in extra if lo < j < hi]
        first = min(lo, first) if missing and missing[0] < pairs[0][0] else lo
    return first, end, pairs, missing, extra


def _depth(line: str) -> int:
    return line.count("(") - line.count(")")


def statement_end(lines: list[str], i: int, limit: int = 8) -> int:
    """Last line of the statement that starts at line `i`: where the parentheses it opens
    close (a call wrapped over several lines), else `i`."""
    depth, k = _depth(lines[i]), i
    while depth > 0 and k + 1 < min(len(lines), i + limit):
        k += 1
        depth += _depth(lines[k])
    return k if depth <= 0 else i


def joined(lines: list[str]) -> str:
    """Lines of one statement as one line: `foo(a,` + `b);` reads as `foo(a, b);`."""
    text = " ".join(norm(x) for x in lines)
    return re.sub(r"\s+\)", ")", re.sub(r"\(\s+", "(", text))


def rejoin(kept: list[str], tags: list[str], tlines: list[str], pairs: list[tuple[int, int]],
           missing: list[int], extra: list[int], same) -> tuple[dict[int, int], set[int]]:
    """Statements wrapped over other lines on the two sides (5.10 wraps a call the patch
    writes on one line): for a pair (k, j) whose statements, joined, are the same (`same(patch
    text, target text)`), the last target line of the statement (k -> last), and the patch
    lines that continue one (absorbed).  The continuation lines must be unpaired on both
    sides, and a patch statement must be all context or all removed."""
    gaps_p, gaps_t = set(missing), set(extra)
    tail: dict[int, int] = {}
    absorbed: set[int] = set()
    for k, j in pairs:
        k1, j1 = statement_end(kept, k), statement_end(tlines, j)
        if (k1, j1) == (k, j) or len(set(tags[k:k1 + 1])) != 1:
            continue
        if not (set(range(k + 1, k1 + 1)) <= gaps_p and set(range(j + 1, j1 + 1)) <= gaps_t):
            continue
        if same(joined(kept[k:k1 + 1]), joined(tlines[j:j1 + 1])):
            tail[k] = j1
            absorbed.update(range(k + 1, k1 + 1))
    return tail, absorbed


def width(line: str) -> int:
    return len(line.expandtabs(8))


def fit_width(line: str, limit: int = 100) -> list[str]:
    """`line` broken after argument commas so that each part fits in `limit` columns, the
    parts aligned under the parenthesis they continue (as the kernel wraps a call).  Only a
    line that a translation made too long is given here; one with no such comma stays."""
    parts = [line]
    while width(parts[-1]) > limit:
        cur = parts[-1]
        indent = indent_col(cur)
        # Argument commas with the column their call's arguments align under; the cut goes
        # after the last one that fits, in the outermost call that has one.
        stack, commas, col = [indent], [], 0
        for i, c in enumerate(cur):
            if c == "(":
                stack.append(col + 1)
            elif c == ")" and len(stack) > 1:
                stack.pop()
            elif c == "," and cur[i + 1:i + 2] == " " and width(cur[:i + 1]) <= limit:
                commas.append((len(stack), i, stack[-1]))
            col = (col // 8 + 1) * 8 if c == "\t" else col + 1
        if not commas:
            break
        depth = min(d for d, _i, _u in commas)
        _d, cut, under = max(x for x in commas if x[0] == depth)
        rest = "\t" * (under // 8) + " " * (under % 8) + cur[cut + 1:].lstrip()
        if width(rest) >= width(cur):
            break
        parts[-1:] = [cur[:cut + 1], rest]
    return parts


def indent_shift(pairs: list[tuple[str, str]]) -> int:
    """Tabs to add to (or, negative, take from) the patch's lines so that they stand as deep as
    the target's: the one difference of indentation every non-blank (patch, target) pair of
    context lines shows, else 0."""
    seen = {indent_col(b) - indent_col(a) for a, b in pairs if a.strip() and b.strip()}
    if len(seen) != 1:
        return 0
    d = seen.pop()
    return d // 8 if d % 8 == 0 else 0


def reindent(line: str, tabs: int) -> str:
    if not tabs or not line.strip():
        return line
    if tabs > 0:
        return "\t" * tabs + line
    return line[-tabs:] if line.startswith("\t" * -tabs) else line

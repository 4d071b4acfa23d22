"""The arguments of a call in C text: one splitter for every part of the port that reads or
edits an argument list (hook calls fitted to the target, parameters a restructuring dropped,
restated helper calls).  Text, not a parse tree: a hunk is a fragment that does not parse."""
from __future__ import annotations

import re


def call_of(text: str, name: str, start: int = 0) -> re.Match | None:
    """The first call of function `name` at or after `start` (not a member `x->name(` or
    `x.name(`, nor the tail of a longer name); the match ends after its `(`."""
    return re.compile(rf"(?<![\w>.]){re.escape(name)}\s*\(").search(text, start)


def argument_spans(text: str, open_at: int, stop: str = "") -> tuple[list[tuple[int, int]], int] | None:
    """(start, end) of each argument, untrimmed, of the call whose `(` is at `open_at`, and the
    offset of its `)`; None when the text ends first or a character of `stop` stands at the
    call's level (a `;`: the call was not closed on the statement).  `f()` has no argument."""
    depth, start, spans = 0, open_at + 1, []
    for i in range(open_at, len(text)):
        c = text[i]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0:
                spans.append((start, i))
                if spans == [(open_at + 1, i)] and not text[open_at + 1:i].strip():
                    spans = []
                return spans, i
        elif c == "," and depth == 1:
            spans.append((start, i))
            start = i + 1
        elif c in stop and depth <= 1:
            return None
    return None


def arguments(text: str, open_at: int) -> tuple[list[str], int] | None:
    """The argument texts (untrimmed) of the call whose `(` is at `open_at`, and the offset
    just past its `)`."""
    got = argument_spans(text, open_at)
    if got is None:
        return None
    spans, close = got
    return [text[a:b] for a, b in spans] or [""], close + 1


def drop_argument(text: str, spans: list[tuple[int, int]], k: int) -> str:
    """`text` without argument `k` of a call whose argument spans are `spans`, and the comma
    that separated it (the one after it, or for the last argument the one before)."""
    if k + 1 < len(spans):
        return text[:spans[k][0]] + text[spans[k + 1][0]:]
    if k == 0:
        return text[:spans[0][0]] + text[spans[0][1]:]
    return text[:spans[k - 1][1]] + text[spans[k][1]:]


def drop_call_argument(text: str, name: str, k: int) -> str:
    """`text` without argument `k` of its first call of `name` (unchanged without one)."""
    m = call_of(text, name)
    got = argument_spans(text, m.end() - 1) if m else None
    if not got or k >= len(got[0]):
        return text
    return drop_argument(text, got[0], k)

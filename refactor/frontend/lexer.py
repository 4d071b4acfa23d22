"""A small C lexer: identifiers with their position and context.

It does not need a grammar, so it cannot be confused by kernel macros.  The
index uses it to read regions the parser could not (ERROR nodes, macro
bodies) and to tell code from comments and strings; the tests use it as an
independent count of every occurrence of a name.
"""
from __future__ import annotations

import bisect
import re
from functools import lru_cache
from dataclasses import dataclass
from typing import Iterator

# One alternation, tried left to right at each position.
_TOKEN = re.compile(
    rb"""
    (?P<lcomment>//[^\n]*)
  | (?P<bcomment>/\*.*?(?:\*/|\Z))
  | (?P<string>"(?:\\.|\\\n|[^"\\\n])*"?)
  | (?P<char>'(?:\\.|[^'\\\n])*'?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<number>\.?[0-9](?:[eEpP][+-]|[A-Za-z0-9_.])*)
    """,
    re.S | re.X,
)
_IDENT = re.compile(rb"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True)
class Token:
    name: str
    start: int  # byte offset
    end: int
    context: str  # "code", "comment" or "string"


def _words(src: bytes, start: int, end: int, context: str, wanted) -> Iterator[Token]:
    for m in _IDENT.finditer(src, start, end):
        word = m.group().decode("ascii")
        if wanted is None or word in wanted:
            yield Token(word, m.start(), m.end(), context)


_CONTEXT = re.compile(
    rb"""//[^\n]*|/\*.*?(?:\*/|\Z)|"(?:\\.|\\\n|[^"\\\n])*"?|'(?:\\.|[^'\\\n])*'?""", re.S)


def context_spans(src: bytes) -> list[tuple[int, int, str]]:
    """(start, end, "comment"|"string") for every comment and literal, in order."""
    out = []
    for m in _CONTEXT.finditer(src):
        first = src[m.start()]
        out.append((m.start(), m.end(), "comment" if first == 0x2F else "string"))
    return out


@lru_cache(maxsize=64)
def _names_regex(wanted: frozenset[str]) -> re.Pattern:
    alts = b"|".join(re.escape(w.encode()) for w in sorted(wanted, key=len, reverse=True))
    return re.compile(rb"(?<![A-Za-z0-9_])(?:" + alts + rb")(?![A-Za-z0-9_])")


def tokens(src: bytes, wanted: frozenset[str] | set[str] | None = None,
           start: int = 0, end: int | None = None,
           spans: list[tuple[int, int, str]] | None = None) -> Iterator[Token]:
    """Identifiers in src[start:end] (only those in `wanted` if given).

    Words inside comments and string literals are reported with that context,
    so a caller can tell `walk_mmu` the code from "walk_mmu" the prose.
    """
    end = len(src) if end is None else end
    if wanted is None:
        yield from _all_tokens(src, start, end)
        return
    spans = context_spans(src) if spans is None else spans
    starts = [s for s, _, _ in spans]
    pattern = _names_regex(frozenset(wanted))
    for m in pattern.finditer(src, start, end):
        at = m.start()
        i = bisect.bisect_right(starts, at) - 1
        context = "code"
        if i >= 0 and at < spans[i][1]:
            context = spans[i][2]
        yield Token(m.group().decode("ascii"), at, m.end(), context)


def _all_tokens(src: bytes, start: int, end: int) -> Iterator[Token]:
    pos = start
    while pos < end:
        m = _TOKEN.search(src, pos, end)
        if not m:
            break
        kind = m.lastgroup
        if kind == "ident":
            yield Token(m.group().decode("ascii"), m.start(), m.end(), "code")
        elif kind in ("lcomment", "bcomment"):
            yield from _words(src, m.start(), m.end(), "comment", None)
        elif kind in ("string", "char"):
            yield from _words(src, m.start() + 1, m.end(), "string", None)
        pos = m.end()


class LineIndex:
    """Byte offset -> (1-based line, 0-based byte column)."""

    __slots__ = ("_starts",)

    def __init__(self, src: bytes) -> None:
        starts = [0]
        find = src.find
        i = find(b"\n")
        while i >= 0:
            starts.append(i + 1)
            i = find(b"\n", i + 1)
        self._starts = starts

    def position(self, offset: int) -> tuple[int, int]:
        line = bisect.bisect_right(self._starts, offset) - 1
        return line + 1, offset - self._starts[line]

    def line_span(self, line: int) -> tuple[int, int]:
        start = self._starts[line - 1]
        end = self._starts[line] - 1 if line < len(self._starts) else None
        return start, end

"""A hunk's lines as the two images a restructuring inverse compares: what the hunk
changes, and whether two images are the same code."""
from __future__ import annotations


def changed_lines(lines: list[tuple[str, str, int]]) -> list[int]:
    """Indices of the hunk's removed and added lines."""
    return [i for i, (g, _t, _n) in enumerate(lines) if g != " "]


def same_lines(a: list[str], b: list[str]) -> bool:
    """The same lines, spacing inside a line aside (a continuation re-aligned under a renamed
    function's parenthesis is the same code)."""
    return [" ".join(x.split()) for x in a] == [" ".join(x.split()) for x in b]

"""Tests that translation makes always true or always false.

The old layout had several objects where the new one has one walker:
`vcpu->arch.walk_mmu`, `&vcpu->arch.root_mmu` and `&vcpu->arch.nested_mmu` all
become `&vcpu->arch.gva_walk` (mappings.toml bases).  A test between two of them
(`vcpu->arch.walk_mmu == &vcpu->arch.root_mmu`: "L2 does not run with nested
TDP") translated name by name compares the walker with itself: it would port
as a constant, silently.  The tests the rules restate (mappings.toml `exprs`,
`walk-mmu-is-nested`) are restated by the translation (refactor/port/lexicon.py
to_new()); any other is a conflict.
"""
from __future__ import annotations

import re

_CHAIN = r"&?\s*[A-Za-z_]\w*(?:\s*(?:->|\.)\s*[A-Za-z_]\w*)*"
_TEST = re.compile(rf"(?<![\w>.])({_CHAIN})\s*([=!]=)\s*({_CHAIN})(?![\w(\[])")


def _tautologies(lines) -> list[str]:
    out = []
    for line in lines:
        for m in _TEST.finditer(line):
            a, b = (re.sub(r"\s+", "", m.group(k)) for k in (1, 3))
            if a == b:
                out.append(f"{a} {m.group(2)} {b}")
    return out


def collapsed_tests(h, hunk, target) -> None:
    """Make ported hunk `h` a conflict where its added lines compare an object with itself and
    the patch's own lines did not (the translation merged the two sides)."""
    if h.status == "conflict" or h.target_start is None or not h.target_file:
        return
    before = target.lines(h.target_file)[h.target_start:h.target_start + h.target_len]
    had = set(_tautologies(t for _g, t, _n in hunk.lines)) | set(_tautologies(before))
    made = [t for t in _tautologies(h.new_lines) if t not in had]
    if not made:
        return
    tests = [m.group(0).strip() for _g, t, _n in hunk.lines if _g == "+" for m in _TEST.finditer(t)]
    h.status = "conflict"
    h.reason = (f"the translated test `{made[0]}` compares the walker with itself: the patch's "
                + (f"`{tests[0]}` " if tests else "")
                + "tests which of two old objects is in use, and both are that one walker on the "
                "target's layout; restate the test by hand")

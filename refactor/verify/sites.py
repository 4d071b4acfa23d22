"""Rewrite sites inside functions: what a divergence points the reader at.

A site is a plan edit (file, line, rule id) when the variant came from a
plan, or a changed hunk of a commit otherwise.  Functions are found in kernel
style (a definition's braces sit in column 0), which holds for the files the
rewrite touches, including paging_tmpl.h's FNAME() definitions.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path

_NAME = re.compile(rb"(\w+\s*\(\s*\w+\s*\)|\w+)\s*\(")
_LOCATION = re.compile(r"((?:[\w.+-]+/)*[\w.+-]+\.[ch]):(\d+)")


@dataclass(frozen=True)
class Span:
    name: str
    first: int     # 1-based line of the header's first line
    last: int      # line of the closing brace


def function_spans(data: bytes) -> list[Span]:
    lines = data.split(b"\n")
    spans: list[Span] = []
    i = 0
    while i < len(lines):
        if lines[i].startswith(b"{"):
            start = i
            while start > 0:
                prev = lines[start - 1]
                s = prev.rstrip()
                if (not s or s.endswith((b";", b"}", b"*/")) or prev.startswith(b"#")
                        or prev.startswith(b"{")):
                    break
                start -= 1
            header = b" ".join(lines[start:i])
            m = _NAME.search(header.split(b"(")[0] + b"(" if b"FNAME" not in header
                             else header)
            end = i + 1
            while end < len(lines) and not lines[end].startswith(b"}"):
                end += 1
            if m and start < i:
                spans.append(Span(re.sub(r"\s+", "", m.group(1).decode(errors="replace")),
                                  start + 1, end + 1))
            i = end + 1
            continue
        i += 1
    return spans


def function_at(spans: list[Span], line: int) -> str | None:
    for s in spans:
        if s.first <= line <= s.last:
            return s.name
    return None


def _hunks(old: bytes, new: bytes) -> list[tuple[int, int, int, str, str]]:
    """(old line, new line, new line count, old text, new text) of each changed block."""
    a, b = old.split(b"\n"), new.split(b"\n")
    out = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag != "equal":
            out.append((i1 + 1, j1 + 1, j2 - j1, b"\n".join(a[i1:i2]).decode(errors="replace")[:160],
                        b"\n".join(b[j1:j2]).decode(errors="replace")[:160]))
    return out


class SiteMap:
    """Sites of one variant, by (file, function)."""

    def __init__(self, files: dict[str, bytes], originals: dict[str, bytes], plan=None,
                 root: Path | None = None):
        self.files = files
        self.spans = {rel: function_spans(data) for rel, data in files.items()}
        # Where the files the variant left alone are read: a BUG_ON sits as often in an
        # untouched callee (translate_nested_gpa() in x86.c) as in a rewritten function.
        self.root = root
        self._other: dict[str, list[Span]] = {}
        self.by_function: dict[str, list[dict]] = {}
        if plan is not None and plan.edits and plan.results == files:
            for e in plan.edits + list(getattr(plan, "post_edits", [])):
                spans = function_spans(plan.originals.get(e.file, b""))
                fn = function_at(spans, e.line)
                self._add(fn, {"file": e.file, "line": e.line, "function": fn, "rule": e.rule,
                               "old": e.old[:160], "new": e.new[:160]})
            return
        # A commit: its hunks, each with the rules of the plan edits that land in it when a
        # plan of the same step is at hand (it may differ in detail from the commit).
        landing: dict[str, list[tuple[int, str]]] = {}
        if plan is not None and plan.edits:
            from refactor.kernel.build import new_line_sites

            for rel, sites in new_line_sites(plan).items():
                landing[rel] = [(x["new_line"], x["rule"]) for x in sites]
        for rel, data in files.items():
            old_spans = function_spans(originals.get(rel, b""))
            for oline, nline, count, old, new in _hunks(originals.get(rel, b""), data):
                fn = function_at(self.spans[rel], nline) or function_at(old_spans, oline)
                span = max(1, count)
                rules = sorted({r for line, r in landing.get(rel, [])
                                if nline <= line < nline + span and r})
                self._add(fn, {"file": rel, "line": nline, "function": fn,
                               "rule": ",".join(rules) or None, "old": old, "new": new})

    def _add(self, fn: str | None, site: dict) -> None:
        # Two edits of one line with the same text and rule (both `mmu`s of
        # `#define PT_HAVE_ACCESSED_DIRTY(mmu) (!(mmu)->...)`) are one site to the reader.
        known = self.by_function.setdefault(fn or "", [])
        if site not in known:
            known.append(site)

    def functions(self) -> list[str]:
        return sorted(f for f in self.by_function if f)

    def locate(self, text: str) -> list[str]:
        """Functions named by `file:line` locations in a result (a BUG_ON's, a trap's)."""
        out = []
        for m in _LOCATION.finditer(text):
            path, line = m.group(1), int(m.group(2))
            matched = False
            for rel, spans in self.spans.items():
                if rel == path or rel.endswith("/" + path) or path.endswith("/" + rel):
                    matched = True
                    fn = function_at(spans, line)
                    if fn and fn not in out:
                        out.append(fn)
            if not matched:
                fn = function_at(self._unchanged_spans(path), line)
                if fn and fn not in out:
                    out.append(fn)
        return out

    def _unchanged_spans(self, rel: str) -> list[Span]:
        if rel not in self._other:
            data = b""
            if self.root is not None and ".." not in Path(rel).parts:
                try:
                    data = (self.root / rel).read_bytes()
                except OSError:
                    pass
            self._other[rel] = function_spans(data)
        return self._other[rel]

    def with_neighbours(self, functions: list[str]) -> list[str]:
        """`functions` plus the site-holding functions that call one of them or that one
        of them calls: a BUG_ON in an untouched callee is usually caused by the caller's
        rewritten test (kvm_translate_gpa() reaching translate_nested_gpa())."""
        out = list(functions)
        bodies = {}
        for rel, spans in self.spans.items():
            lines = self.files[rel].split(b"\n")
            for sp in spans:
                bodies[sp.name] = b"\n".join(lines[sp.first - 1:sp.last]).decode(errors="replace")
        for fn in list(functions):
            call = re.compile(r"\b" + re.escape(fn) + r"\s*\(")
            for other in self.functions():
                if other in out:
                    continue
                body = bodies.get(other, "")
                if call.search(body.split("{", 1)[-1]) or (
                        fn in bodies and re.search(r"\b" + re.escape(other) + r"\s*\(",
                                                   bodies[fn].split("{", 1)[-1])):
                    out.append(other)
        return out

    def sites(self, functions: list[str]) -> list[dict]:
        out = []
        for fn in functions:
            out.extend(self.by_function.get(fn, []))
        return out

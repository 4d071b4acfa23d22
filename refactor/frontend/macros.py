"""Known kernel macros, neutralised before parsing with byte offsets kept.

tree-sitter-c knows C, not the kernel's macro dialect.  Each macro listed in
rules/macros.toml (the kernel's macro file, as Coccinelle keeps one) is
rewritten to plain C of exactly the same length (newlines kept), so every
node of the parse still points at the right bytes of the real file.  Spans
that were changed are returned too: the index reads them again with the
lexer, so a name hidden inside a masked macro is never lost.
"""
from __future__ import annotations

import re
from functools import lru_cache

from refactor.errors import RulesError

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _alternation(words: list[str], tail: bytes, flags: int = 0) -> re.Pattern | None:
    if not words:
        return None
    return re.compile(rb"\b(?:" + b"|".join(re.escape(w.encode()) for w in words) + rb")" + tail,
                      flags)


class MacroTables:
    """rules/macros.toml (with the user's --rules), compiled to the patterns mask() uses."""

    def __init__(self, data: dict):
        def names(key: str) -> list[str]:
            value = data.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) and _WORD.match(v)
                                                      for v in value):
                raise RulesError(f"macros.toml [macros] {key}: expected a list of C identifiers")
            return sorted(set(value), key=len, reverse=True)

        self.fingerprint = repr(sorted(data.items()))
        decl = data.get("declarators", {})
        if not isinstance(decl, dict) or not all(isinstance(v, int) and v >= 0 for v in decl.values()):
            raise RulesError("macros.toml [macros.declarators]: expected NAME = argument index")
        self.declarators = dict(decl)
        self.attr = _alternation(names("attributes"), rb"\b")
        self.attr_args = _alternation(names("attributes_with_args"), rb"\s*\(")
        self.decl = (re.compile(rb"\b(" + b"|".join(re.escape(d.encode()) for d in self.declarators)
                                + rb")\s*\(") if self.declarators else None)
        self.type_arg = _alternation(names("type_argument"), rb"\s*\(")
        # Tracepoint definitions: their arguments are a DSL, not C.
        trace = names("trace_dsl")
        self.trace = (re.compile(rb"^(?:" + b"|".join(re.escape(t.encode()) for t in trace)
                                 + rb")\s*\(", re.M) if trace else None)


@lru_cache(maxsize=1)
def tables() -> MacroTables:
    """The tables in force; refactor.rules_overlay clears this when --rules changes them."""
    from refactor.rules import RULES_DIR, read_rules_file

    return MacroTables(read_rules_file(RULES_DIR, "macros.toml").get("macros", {}))


_LOOP = re.compile(rb"\b([A-Za-z0-9_]*for_each[A-Za-z0-9_]*)(\s*\()")
_STRUCT_KW = re.compile(rb"\b(?:struct|union|enum)\b")
_CASE_RANGE = re.compile(rb"\bcase\b[^:;\n]*?(\.\.\.)")
_ANON_BITFIELD = re.compile(rb"\bunsigned(?=\s*:\s*[0-9])")
# A macro invoked at file scope to define things, with no `;` after it.
_TOPLEVEL_CALL = re.compile(rb"^[A-Za-z_][A-Za-z0-9_]*[ \t]*\(", re.M)


def _finditer(pattern: re.Pattern | None, src: bytes):
    return pattern.finditer(src) if pattern is not None else ()


def _blank(buf: bytearray, start: int, end: int) -> None:
    for i in range(start, end):
        if buf[i] not in (0x0A, 0x0D):
            buf[i] = 0x20


def _close_paren(src: bytes, open_at: int) -> int:
    """Index just past the parenthesis matching src[open_at] == '('."""
    depth = 0
    i = open_at
    n = len(src)
    while i < n:
        c = src[i]
        if c == 0x28:
            depth += 1
        elif c == 0x29:
            depth -= 1
            if depth == 0:
                return i + 1
        elif c in (0x22, 0x27):  # skip string and char literals
            q = c
            i += 1
            while i < n and src[i] != q:
                i += 2 if src[i] == 0x5C else 1
        i += 1
    return n


def _split_args(src: bytes, start: int, end: int) -> list[tuple[int, int]]:
    """Top-level comma-separated argument spans of src[start:end]."""
    spans, depth, begin = [], 0, start
    for i in range(start, end):
        c = src[i]
        if c in b"([{":
            depth += 1
        elif c in b")]}":
            depth -= 1
        elif c == 0x2C and depth == 0:
            spans.append((begin, i))
            begin = i + 1
    spans.append((begin, end))
    return spans


def mask(src: bytes) -> tuple[bytes, list[tuple[int, int]]]:
    """Return (same-length parsable text, spans that were changed)."""
    buf = bytearray(src)
    spans: list[tuple[int, int]] = []
    t = tables()

    for m in _finditer(t.attr, src):
        _blank(buf, m.start(), m.end())
    for m in _finditer(t.attr_args, src):
        end = _close_paren(src, m.end() - 1)
        _blank(buf, m.start(), end)
        spans.append((m.start(), end))
    for m in _LOOP.finditer(src):
        # `list_for_each_entry(pos, head, member) {` -> `while (pos, head, member) {`
        name_start, name_end = m.span(1)
        buf[name_start:name_start + 5] = b"while"
        _blank(buf, name_start + 5, name_end)
    for m in _finditer(t.decl, src):
        end = _close_paren(src, m.end() - 1)
        args = _split_args(src, m.end(), end - 1)
        which = t.declarators[m.group(1).decode()]
        if which >= len(args):
            continue
        name_start, name_end = args[which]
        # `DECLARE_BITMAP(x, 256)` -> `long           x      `
        _blank(buf, m.start(), end)
        buf[m.start():m.start() + 4] = b"long"
        buf[name_start:name_end] = src[name_start:name_end]
        spans.append((m.start(), end))
    for m in _finditer(t.type_arg, src):
        end = _close_paren(src, m.end() - 1)
        changed = False
        for k in _STRUCT_KW.finditer(src, m.end(), end):
            _blank(buf, k.start(), k.end())
            changed = True
        if changed:
            spans.append((m.start(), end))
    for m in _CASE_RANGE.finditer(src):
        # GNU case range `case 1 ... 3:` -> `case 1 |   3:`
        s = m.start(1)
        buf[s:s + 3] = b"|  "
    for m in _ANON_BITFIELD.finditer(src):
        # `unsigned:3;` (anonymous padding) -> `int _pad:3;`
        buf[m.start():m.end()] = b"int _pad"
    for m in _finditer(t.trace, src):
        # The whole definition goes (name, arguments, a `;` after it): a tracepoint defines
        # nothing the C parser needs, and a run of them without `;` is not C at file scope.
        end = _close_paren(src, m.end() - 1)
        semi = re.match(rb"[ \t]*;", src[end:end + 64])
        stop = end + (semi.end() if semi else 0)
        _blank(buf, m.start(), stop)
        spans.append((m.start(), stop))
    for m in _TOPLEVEL_CALL.finditer(src):
        end = _close_paren(src, m.end() - 1)
        rest = re.match(rb"[ \t]*(?://[^\n]*)?\n\s*(.)", src[end:end + 400])
        if rest is None or rest.group(1) in (b"{", b";", b",", b")"):
            continue
        if src[end:src.find(b"\n", end)].strip():
            continue  # something follows on the line: a declaration or definition
        _blank(buf, m.start(), end)
        spans.append((m.start(), end))
    return bytes(buf), spans


def join_continuations(text: bytes) -> bytes:
    """Macro body with line-continuation backslashes blanked (same length)."""
    return re.sub(rb"\\(?=\r?\n)", b" ", text)

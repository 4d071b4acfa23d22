"""Preprocessor conditionals that split C: parse each branch on its own.

tree-sitter-c reads `#ifdef` inside a function only when each branch holds
whole statements.  Kernel code also splits a statement's head between
branches, opens a brace in one branch and closes it after `#endif`, or ends
a branch with a label (`out:` then `#endif`).  Where the plain parse has an
error inside such a conditional, the file is parsed again as the compiler
would see it with the first branch taken (the other branches and the
directive lines blanked, same length), and once more with the last branch
taken, whose tree is used for the bytes of that branch.  Branches between
(an `#elif` of three or more) are left to the lexer and reported.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

_DIRECTIVE = re.compile(rb"^[ \t]*#[ \t]*(if|ifdef|ifndef|elif|else|endif)\b[^\n]*", re.M)


@dataclass
class Group:
    """One #if ... #endif: directive line spans and the branch bodies between them."""

    directives: list[tuple[int, int]] = field(default_factory=list)
    bodies: list[tuple[int, int]] = field(default_factory=list)

    @property
    def start(self) -> int:
        return self.directives[0][0]

    @property
    def end(self) -> int:
        return self.directives[-1][1]


def _line_end(src: bytes, at: int) -> int:
    """End of a directive line, following backslash continuations."""
    while True:
        nl = src.find(b"\n", at)
        if nl < 0:
            return len(src)
        if nl > 0 and src[nl - 1:nl] == b"\\":
            at = nl + 1
            continue
        return nl


def groups(src: bytes) -> list[Group]:
    """Every complete conditional group of the file (nested ones included)."""
    out: list[Group] = []
    stack: list[Group] = []
    for m in _DIRECTIVE.finditer(src):
        kind = m.group(1)
        start, end = m.start(), _line_end(src, m.start())
        if kind in (b"if", b"ifdef", b"ifndef"):
            stack.append(Group([(start, end)]))
        elif not stack:
            continue  # unbalanced: leave it to the parser
        else:
            g = stack[-1]
            g.bodies.append((g.directives[-1][1], start))
            g.directives.append((start, end))
            if kind == b"endif":
                out.append(stack.pop())
    return out


def _blank(buf: bytearray, start: int, end: int) -> None:
    for i in range(start, end):
        if buf[i] not in (0x0A, 0x0D):
            buf[i] = 0x20


def _flatten(src: bytes, chosen: list[Group], keep: str) -> tuple[bytes, list[tuple[int, int]]]:
    """Blank directives and every branch but the first (keep="first") or last; return hidden bodies."""
    buf = bytearray(src)
    hidden: list[tuple[int, int]] = []
    for g in chosen:
        keep_i = 0 if keep == "first" else len(g.bodies) - 1
        for i, (s, e) in enumerate(g.bodies):
            if i != keep_i:
                _blank(buf, s, e)
                hidden.append((s, e))
        for s, e in g.directives:
            _blank(buf, s, e)
    # A label left directly before a closing brace needs a statement (`out: ;`).
    for g in chosen:
        for s, _ in g.directives:
            before = bytes(buf[:s]).rstrip()
            after = bytes(buf[s:s + 4096]).lstrip()
            if before.endswith(b":") and after.startswith(b"}") and \
                    re.search(rb"(?:^|[;{}\s])[A-Za-z_]\w*\s*:\Z", before[-200:]):
                buf[s] = 0x3B  # ';'
                break
    return bytes(buf), hidden


def _error_bytes(errors: list[tuple[int, int]]) -> int:
    return sum(e - s for s, e in errors)


def _collect_errors(tree) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    stack = [tree.root_node]
    while stack:
        n = stack.pop()
        if n.type == "ERROR" or n.is_missing:
            out.append((n.start_byte, max(n.end_byte, n.start_byte + 1)))
        elif n.has_error:
            stack.extend(n.children)
    return out


def reduce_errors(parser, text: bytes, tree, errors: list[tuple[int, int]]):
    """(tree, errors, hidden spans, [(start, end, tree of that last branch)]).

    Returns the inputs unchanged when no conditional overlaps an error or
    flattening does not reduce the errors.
    """
    all_groups = groups(text)
    chosen: list[Group] = []
    for _ in range(3):  # errors may move to other conditionals once one is read
        more = [g for g in all_groups if g not in chosen
                and any(s < g.end and g.start < e for s, e in errors)]
        if not more:
            break
        trial = chosen + more
        flat, hidden = _flatten(text, trial, "first")
        new_tree = parser.parse(flat)
        new_errors = _collect_errors(new_tree)
        if _error_bytes(new_errors) >= _error_bytes(errors):
            break
        chosen, tree, errors = trial, new_tree, new_errors
    if not chosen:
        return tree, errors, [], []
    _, hidden = _flatten(text, chosen, "first")
    last_text, _ = _flatten(text, chosen, "last")
    last_tree = parser.parse(last_text)
    last_errors = _collect_errors(last_tree)
    alternates = []
    masked = []
    for g in chosen:
        if len(g.bodies) < 2:
            continue
        s, e = g.bodies[-1]
        if any(es < e and s < ee for es, ee in last_errors):
            masked.append((s, e))
        else:
            alternates.append((s, e, last_tree))
    # Middle branches and unreadable last branches stay hidden: the lexer reads them.
    keep = {(s, e) for s, e, _ in alternates}
    return tree, errors, [h for h in hidden if h not in keep], alternates

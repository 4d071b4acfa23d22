"""tree-sitter-c over kernel sources, with macros handled and offsets kept.

A ParsedFile is the real file's bytes plus one or more syntax trees over
same-offset text: the whole file with known macros masked, and each macro
body parsed on its own (token pasting neutralised), so that code written
inside a #define, like BUILD_MMU_ROLE_ACCESSOR's accessors, is typed too.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import tree_sitter_c
from tree_sitter import Language, Node, Parser, Tree

from refactor.frontend import conditionals, macros

LANGUAGE = Language(tree_sitter_c.language())
_PARSER = Parser(LANGUAGE)
# A macro body that is a statement or expression is parsed inside a function.
_WRAP_HEAD = b"void __kvm_refactor_fragment(void){"
_WRAP_TAIL = b"\n;}"


@dataclass
class Fragment:
    """A syntax tree whose byte 0 sits at `offset` in the real file."""

    tree: Tree
    offset: int
    start: int  # span of the real file it covers
    end: int
    is_macro: bool
    macro: str | None = None  # name of the #define whose body this is

    def node_at(self, start: int, end: int) -> Node | None:
        lo, hi = start - self.offset, end - self.offset
        node = self.tree.root_node.descendant_for_byte_range(lo, hi)
        if node is None or node.start_byte != lo or node.end_byte != hi:
            return None
        return node


@dataclass
class ParsedFile:
    rel: str
    src: bytes
    fragments: list[Fragment] = field(default_factory=list)
    masked_spans: list[tuple[int, int]] = field(default_factory=list)
    error_spans: list[tuple[int, int]] = field(default_factory=list)
    # Macro bodies, parsed on first use: (start, end, macro name).
    macro_bodies: list[tuple[int, int, str]] = field(default_factory=list)
    # #else branches the main tree leaves out (see conditionals): (start, end, their own tree).
    alternates: list[tuple[int, int, Fragment]] = field(default_factory=list)
    _parsed_macros: dict[int, Fragment] = field(default_factory=dict)

    @property
    def main(self) -> Fragment:
        return self.fragments[0]

    def fragment_for(self, start: int, end: int) -> Fragment:
        """The innermost fragment covering a span (a macro body, an #else branch, the file)."""
        for bstart, bend, name in self.macro_bodies:
            if bstart <= start and end <= bend:
                return self._macro(bstart, bend, name)
        for astart, aend, frag in self.alternates:
            if astart <= start and end <= aend:
                return frag
        return self.fragments[0]

    def _macro(self, bstart: int, bend: int, name: str) -> Fragment:
        frag = self._parsed_macros.get(bstart)
        if frag is None:
            frag = _macro_fragment(self.src, bstart, bend)
            frag.macro = name
            self._parsed_macros[bstart] = frag
            self.fragments.append(frag)
            errs: list[tuple[int, int]] = []
            _errors(frag.tree.root_node, frag.offset, errs)
            self.error_spans.extend((max(s, bstart), min(e, bend)) for s, e in errs)
        return frag

    def in_error(self, start: int, end: int) -> bool:
        return any(s <= start and end <= e for s, e in self.error_spans)

    def in_masked(self, start: int, end: int) -> bool:
        return any(s <= start and end <= e for s, e in self.masked_spans)

    def text(self, node: Node, frag: Fragment) -> str:
        return self.src[node.start_byte + frag.offset:node.end_byte + frag.offset].decode(
            "utf-8", "replace")


def _errors(node: Node, offset: int, out: list[tuple[int, int]]) -> None:
    stack = [node]
    while stack:
        n = stack.pop()
        if n.type == "ERROR" or n.is_missing:
            out.append((n.start_byte + offset, max(n.end_byte, n.start_byte + 1) + offset))
        elif n.has_error:
            stack.extend(n.children)


_PASTE = re.compile(rb"##|#(?=[A-Za-z_])")


def _macro_fragment(src: bytes, start: int, end: int) -> Fragment:
    text = macros.join_continuations(src[start:end])
    # `is_##reg##_##name` -> `is___reg___name`: same length, one identifier.
    text = _PASTE.sub(lambda m: b"_" * len(m.group()), text)
    text, _ = macros.mask(text)
    if not re.search(rb"[;{]", text):
        wrapped = _WRAP_HEAD + text + _WRAP_TAIL
        tree = _PARSER.parse(wrapped)
        return Fragment(tree, start - len(_WRAP_HEAD), start, end, True)
    tree = _PARSER.parse(text)
    if tree.root_node.has_error:
        wrapped = _WRAP_HEAD + text + _WRAP_TAIL
        alt = _PARSER.parse(wrapped)
        if not alt.root_node.has_error:
            return Fragment(alt, start - len(_WRAP_HEAD), start, end, True)
    return Fragment(tree, start, start, end, True)


def parse(rel: str, src: bytes, want_macros: bool = True) -> ParsedFile:
    masked, spans = macros.mask(src)
    tree = _PARSER.parse(masked)
    errors: list[tuple[int, int]] = []
    _errors(tree.root_node, 0, errors)
    alternates: list[tuple[int, int, Fragment]] = []
    if errors and b"#" in src:
        tree, errors, hidden, alts = conditionals.reduce_errors(_PARSER, masked, tree, errors)
        spans = spans + hidden
        alternates = [(a, b, Fragment(t, 0, a, b, False)) for a, b, t in alts]
    pf = ParsedFile(rel, src, [Fragment(tree, 0, 0, len(src), False)], spans)
    pf.error_spans.extend(errors)
    pf.alternates = alternates
    pf.fragments.extend(frag for _, _, frag in alternates)
    if want_macros and b"#define" in src:
        _collect_macros(tree.root_node, pf.macro_bodies)
    return pf


_MACRO_HOLDERS = {"preproc_if", "preproc_ifdef", "preproc_else", "preproc_elif", "preproc_elifdef",
                  "translation_unit", "ERROR"}


def _collect_macros(root: Node, out: list[tuple[int, int, str]]) -> None:
    """#define bodies at file scope or in #if blocks (where the kernel puts them)."""
    stack = [root]
    while stack:
        node = stack.pop()
        for child in node.children:
            kind = child.type
            if kind in ("preproc_def", "preproc_function_def"):
                body, name = child.child_by_field_name("value"), child.child_by_field_name("name")
                if body is not None and name is not None:
                    out.append((body.start_byte, body.end_byte, name.text.decode("utf-8", "replace")))
            elif kind in _MACRO_HOLDERS:
                stack.append(child)

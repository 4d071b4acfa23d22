"""Names the tree already uses: a new walker name must not collide with any of them.

A walker name that is a macro (`--names gva=KVM_MAX_VCPUS`) would be
expanded by the preprocessor; one that is a type, a function, a variable
or a member of another struct would shadow it or be shadowed.  Any
occurrence of the name in code (not in comments or strings) of the files
the index read is therefore a collision; a #define of it is reported as a
macro.
"""
from __future__ import annotations

import re

from refactor.errors import RulesError
from refactor.frontend.lexer import tokens

_DEFINE = re.compile(rb"#[ \t]*define[ \t]+\Z")
_TYPE = re.compile(rb"\b(?:struct|union|enum)[ \t]+\Z")


def first_use(files: dict, name: str) -> tuple[str, int, str] | None:
    """(file, line, kind) of the name's definition if it is a macro, else of its first use in code."""
    found = None
    for rel in sorted(files):
        src = files[rel].src
        for tok in tokens(src, frozenset({name})):
            if tok.context != "code":
                continue
            head = src[src.rfind(b"\n", 0, tok.start) + 1:tok.start]
            kind = "a macro" if _DEFINE.search(head) else "a struct, union or enum" if _TYPE.search(head) \
                else "an identifier"
            where = (rel, src.count(b"\n", 0, tok.start) + 1, kind)
            if kind == "a macro":
                return where
            found = found or where
    return found


def refuse_tree_names(files: dict, names, allowed: set[str] | frozenset[str] = frozenset()) -> None:
    """RulesError when a walker name is already a macro, type, function, variable or member of the tree."""
    for role, ident in names.as_dict().items():
        if ident in allowed:
            continue
        hit = first_use(files, ident)
        if hit:
            rel, line, kind = hit
            raise RulesError(f"{role} walker name {ident!r} is already {kind} in the tree ({rel}:{line}); "
                             "choose another name")

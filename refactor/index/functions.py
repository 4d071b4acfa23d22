"""Functions of a tree as the rewriter sees them: parameters, locals, uses.

Gathers, for every function definition (including those written inside a
#define body and the FNAME(...) functions of paging_tmpl.h), its parameters,
its locals, where each is used, and every prototype of it, so that the
narrowing pass can reason over the call graph across files.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from tree_sitter import Node

from refactor.frontend.ctype import CType, declared, text
from refactor.frontend.parse import Fragment, ParsedFile
from refactor.index.program import function_name

_HOLDERS = {"preproc_if", "preproc_ifdef", "preproc_else", "preproc_elif", "preproc_elifdef",
            "translation_unit", "linkage_specification", "declaration_list", "ERROR"}


@dataclass
class Var:
    name: str
    ctype: CType
    decl: Node  # parameter_declaration or declaration node
    declarator: Node
    index: int | None = None  # parameter position, None for locals
    uses: list[Node] = field(default_factory=list)  # identifier nodes, declarator excluded


@dataclass
class Function:
    name: str
    file: str
    frag: Fragment
    node: Node  # function_definition
    params: list[Var]
    locals: list[Var]
    macro: str | None = None
    pattern: re.Pattern | None = None  # for macro-made names such as is_##reg##_##name

    def var(self, name: str) -> Var | None:
        for v in self.locals + self.params:
            if v.name == name:
                return v
        return None


@dataclass
class Prototype:
    name: str
    file: str
    frag: Fragment
    node: Node  # the declaration
    params: list[Var]


def _params(fn_decl: Node) -> list[Var]:
    while fn_decl is not None and fn_decl.type != "function_declarator":
        fn_decl = fn_decl.child_by_field_name("declarator")
    if fn_decl is None:
        return []
    plist = fn_decl.child_by_field_name("parameters")
    out = []
    idx = 0
    for p in (plist.named_children if plist is not None else []):
        if p.type != "parameter_declaration":
            continue
        got = declared(p)
        if got:
            name, ctype, decl = got[0]
            out.append(Var(name, ctype, p, decl, idx))
        idx += 1
    return out


def _locals(body: Node | None) -> list[Var]:
    out = []
    if body is None:
        return out
    stack = [body]
    while stack:
        node = stack.pop()
        for child in node.named_children:
            if child.type == "declaration":
                for name, ctype, decl in declared(child):
                    out.append(Var(name, ctype, child, decl))
            elif child.type not in ("function_definition",):
                stack.append(child)
    return out


def _identifier_uses(body: Node, names: set[str], skip: set[int]) -> dict[str, list[Node]]:
    uses: dict[str, list[Node]] = {n: [] for n in names}
    stack = [body]
    while stack:
        node = stack.pop()
        if node.type == "identifier":
            name = text(node)
            if name in uses and node.start_byte not in skip:
                uses[name].append(node)
            continue
        stack.extend(node.children)
    return uses


def _template_pattern(pf: ParsedFile, frag: Fragment, fn: Node) -> re.Pattern | None:
    """Regex for the names a token-pasting macro gives its function."""
    decl = fn.child_by_field_name("declarator")
    while decl is not None and decl.type != "function_declarator":
        decl = decl.child_by_field_name("declarator")
    inner = decl.child_by_field_name("declarator") if decl is not None else None
    if inner is None:
        return None
    real = pf.text(inner, frag)
    if "##" not in real:
        return None
    head = pf.src[:frag.start].rsplit(b"#define", 1)[-1]
    m = re.match(rb"\s*\w+\(([^)]*)\)", head)
    params = {p.strip().decode() for p in m.group(1).split(b",")} if m else set()
    parts = [p.strip() for p in real.split("##")]
    rx = "".join(r"\w+?" if p in params else re.escape(p) for p in parts)
    return re.compile(rx + r"\Z")


_NAMING_MACRO = re.compile(rb"^[ \t]*#[ \t]*define[ \t]+(\w+)\((\w+)\)[ \t]+([\w#]+?)##\2[ \t]*$", re.M)
_FUNC_MACRO = re.compile(rb"^[ \t]*#[ \t]*define[ \t]+(\w+)\(([\w, \t]*)\)[ \t]+((?:[^\n]*\\\n)*[^\n]*)", re.M)


@dataclass
class Macro:
    """A function-like macro: its parameters and body text (for walker-only parameters)."""

    name: str
    params: list[str]
    body: str
    file: str


def naming_macros(files: dict[str, ParsedFile]) -> dict[str, set[str]]:
    """Macros that build function names, e.g. FNAME(x) -> {"paging64_", "ept_", ...}."""
    out: dict[str, set[str]] = {}
    for pf in files.values():
        for name, prefixes in naming_macros_in(pf.src).items():
            out.setdefault(name, set()).update(prefixes)
    return out


def naming_macros_in(src: bytes) -> dict[str, set[str]]:
    """naming_macros() of one file's text."""
    out: dict[str, set[str]] = {}
    for m in _NAMING_MACRO.finditer(src):
        out.setdefault(m.group(1).decode(), set()).add(m.group(3).replace(b"##", b"").decode())
    return out


def function_macros(files: dict[str, ParsedFile]) -> dict[str, list[Macro]]:
    out: dict[str, list[Macro]] = {}
    for rel, pf in files.items():
        for m in _FUNC_MACRO.finditer(pf.src):
            params = [p.strip() for p in m.group(2).decode().split(",") if p.strip()]
            out.setdefault(m.group(1).decode(), []).append(
                Macro(m.group(1).decode(), params, m.group(3).decode("utf-8", "replace"), rel))
    return out


def collect(files: dict[str, ParsedFile], interesting=lambda src: True) -> tuple[dict[str, list[Function]], dict[str, list[Prototype]]]:
    """All function definitions and prototypes, by name."""
    defs: dict[str, list[Function]] = {}
    protos: dict[str, list[Prototype]] = {}
    for rel, pf in files.items():
        frags = [pf.main]
        for start, end, _name in pf.macro_bodies:
            if interesting(pf.src[start:end]):
                frags.append(pf.fragment_for(start, end))
        for frag in frags:
            for node in top_level(frag.tree.root_node):
                if not interesting(pf.src[node.start_byte + frag.offset:node.end_byte + frag.offset]):
                    continue  # no struct kvm_mmu in sight: nothing to narrow or call with one
                if node.type == "function_definition":
                    fn = _function(pf, frag, node)
                    if fn is not None:
                        defs.setdefault(fn.name, []).append(fn)
                elif node.type == "declaration":
                    for decl in node.children_by_field_name("declarator"):
                        d = decl
                        while d is not None and d.type == "pointer_declarator":
                            d = d.child_by_field_name("declarator")
                        if d is not None and d.type == "function_declarator":
                            name = " ".join(text(d.child_by_field_name("declarator")).split())
                            protos.setdefault(name, []).append(
                                Prototype(name, rel, frag, node, _params(d)))
    return defs, protos


def top_level(root: Node):
    stack = [root]
    while stack:
        node = stack.pop()
        for child in reversed(node.children):
            if child.type in _HOLDERS:
                stack.append(child)
            else:
                yield child


def _function(pf: ParsedFile, frag: Fragment, node: Node) -> Function | None:
    name = function_name(node)
    if name == "?":
        return None
    params = _params(node.child_by_field_name("declarator"))
    body = node.child_by_field_name("body")
    local_vars = _locals(body)
    names = {v.name for v in params + local_vars}
    skip = {v.declarator.start_byte for v in params + local_vars}
    # The declarator's own identifier is not a use.
    for v in params + local_vars:
        d = v.declarator
        while d is not None and d.type != "identifier":
            d = d.child_by_field_name("declarator") or (d.named_children[0] if d.named_children else None)
        if d is not None:
            skip.add(d.start_byte)
    if body is not None and names:
        uses = _identifier_uses(body, names, skip)
        # A local shadows a parameter of the same name.
        owners = {v.name: v for v in params}
        owners.update({v.name: v for v in local_vars})
        for nm, nodes in uses.items():
            owners[nm].uses.extend(nodes)
    fn = Function(name, pf.rel, frag, node, params, local_vars, macro=frag.macro if frag.is_macro else None)
    if frag.is_macro:
        fn.pattern = _template_pattern(pf, frag, node)
    return fn


def struct_node(files: dict[str, ParsedFile], name: str) -> tuple[ParsedFile, Node] | None:
    """The definition of `struct name` (the first one with a body)."""
    for pf in files.values():
        if f"struct {name}".encode() not in pf.src:
            continue
        for node in top_level(pf.main.tree.root_node):
            spec = node if node.type == "struct_specifier" else node.child_by_field_name("type")
            if spec is not None and spec.type == "struct_specifier" \
                    and text(spec.child_by_field_name("name")) == name \
                    and spec.child_by_field_name("body") is not None:
                return pf, spec
    return None


def fnptr_params(files: dict[str, ParsedFile], struct: str) -> dict[str, list[str]]:
    """Parameter types of each function-pointer member of a struct."""
    found = struct_node(files, struct)
    out: dict[str, list[str]] = {}
    if found is None:
        return out
    _, spec = found
    for fd in spec.child_by_field_name("body").named_children:
        if fd.type != "field_declaration":
            continue
        for decl in fd.children_by_field_name("declarator"):
            d = decl
            while d is not None and d.type == "pointer_declarator":
                d = d.child_by_field_name("declarator")
            if d is None or d.type != "function_declarator":
                continue
            inner = d.child_by_field_name("declarator")
            name = text(inner).strip("()* \t")
            out[name] = [str(v.ctype) for v in _params_any(d)]
    return out


def _params_any(fn_decl: Node) -> list[Var]:
    plist = fn_decl.child_by_field_name("parameters")
    out = []
    for i, p in enumerate(c for c in (plist.named_children if plist is not None else [])
                          if c.type == "parameter_declaration"):
        got = declared(p)
        if got:
            name, ctype, decl = got[0]
            out.append(Var(name, ctype, p, decl, i))
        else:
            out.append(Var("", CType("?"), p, p, i))
    return out


_top_level = top_level  # the historic private name, for code not yet switched

"""Static types of expressions and the scope they are read in.

The typer knows what the tree declares: struct members (StructTable),
function signatures, a function's parameters and locals, file-scope globals.
It answers "what is the type of this base expression" and, for a kvm_mmu
pointer, "what was it set to before this point" (the flow facts the rewriter
needs, such as `mmu = &vcpu->arch.guest_mmu` in nested EPT setup).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from tree_sitter import Node, Query, QueryCursor

from refactor.frontend.ctype import CType, FunctionSig, StructTable, declared, declarator_name_type, specifier_type, text
from refactor.frontend.parse import LANGUAGE
from refactor.rules import squash  # noqa: F401  (re-exported: the typer's callers import it here)

_DECL_QUERY = Query(LANGUAGE, "[(declaration) @d (parameter_declaration) @d]")
_ASSIGN_QUERY = Query(LANGUAGE, "[(assignment_expression) @a (init_declarator) @a]")

# Macros whose value is a pointer to their struct-type argument.
_CONTAINER_MACROS = {"container_of": 1, "container_of_const": 1, "list_entry": 1,
                     "list_first_entry": 1, "list_first_entry_or_null": 1, "hlist_entry": 1}




def function_name(fn: Node) -> str:
    decl = fn.child_by_field_name("declarator")
    while decl is not None and decl.type in ("pointer_declarator", "parenthesized_declarator",
                                             "attributed_declarator"):
        decl = decl.child_by_field_name("declarator") or (decl.named_children[-1]
                                                          if decl.named_children else None)
    if decl is not None and decl.type == "function_declarator":
        inner = decl.child_by_field_name("declarator")
        return " ".join(text(inner).split())
    return "?"


def function_sig(node: Node, decl: Node, file: str) -> FunctionSig | None:
    """Signature from a function definition or prototype's declarator."""
    base = specifier_type(node.child_by_field_name("type"))
    name, ret = declarator_name_type(decl, base)
    fdecl = decl
    while fdecl is not None and fdecl.type != "function_declarator":
        fdecl = fdecl.child_by_field_name("declarator")
    if name is None or fdecl is None:
        return None
    params = []
    plist = fdecl.child_by_field_name("parameters")
    for p in (plist.named_children if plist is not None else []):
        if p.type == "parameter_declaration":
            for pname, ptype, _ in declared(p):
                params.append((pname, ptype))
    depth = ret.depth
    return FunctionSig(name=name, returns=CType(ret.name, depth), params=params, file=file,
                       line=node.start_point[0] + 1)


@dataclass
class Program:
    """What the whole tree declares: structs and functions."""

    structs: StructTable = field(default_factory=StructTable)
    functions: dict[str, FunctionSig] = field(default_factory=dict)

    def learn(self, root: Node, file: str) -> None:
        """Structs and function signatures declared at file scope.

        A walk of the top level (and of #if blocks) rather than a query over
        the whole tree: definitions live there, and bodies are not visited.
        """
        stack = list(reversed(root.children))
        while stack:
            node = stack.pop()
            kind = node.type
            if kind in _CONTAINERS:
                stack.extend(reversed(node.children))
                continue
            if kind == "function_definition":
                decl = node.child_by_field_name("declarator")
                sig = function_sig(node, decl, file) if decl is not None else None
                if sig:
                    self.functions[sig.name] = sig
                self._structs_in(node.child_by_field_name("type"), file)
            elif kind in ("declaration", "type_definition", "struct_specifier", "union_specifier",
                          "field_declaration"):
                self._structs_in(node if kind.endswith("specifier") else node.child_by_field_name("type"),
                                 file)
                if kind == "declaration":
                    for decl in node.children_by_field_name("declarator"):
                        if "function_declarator" in decl.type or decl.type == "pointer_declarator":
                            sig = function_sig(node, decl, file)
                            if sig and sig.name not in self.functions:
                                self.functions[sig.name] = sig

    def _structs_in(self, spec: Node | None, file: str) -> None:
        if spec is None or spec.type not in ("struct_specifier", "union_specifier"):
            return
        name, body = spec.child_by_field_name("name"), spec.child_by_field_name("body")
        if name is not None and body is not None:
            self.structs.add_struct(text(name), body, file)
            # Named structs defined inside this one are visible at file scope in C.
            for field_decl in body.named_children:
                if field_decl.type == "field_declaration":
                    self._structs_in(field_decl.child_by_field_name("type"), file)


_CONTAINERS = {"preproc_if", "preproc_ifdef", "preproc_else", "preproc_elif", "preproc_elifdef",
               "linkage_specification", "declaration_list", "ERROR"}


class Scope:
    """Names visible in one function (parameters and locals) or at file scope."""

    def __init__(self, program: Program, node: Node | None, src_of, globals_: dict[str, CType]):
        self.program = program
        self.node = node
        self.src_of = src_of  # node -> real source text
        self.names: dict[str, CType] = {}
        self.globals = globals_
        if node is not None:
            for d in QueryCursor(_DECL_QUERY).captures(node).get("d", []):
                for name, ctype, _ in declared(d):
                    self.names.setdefault(name, ctype)
        self._assigns: list[tuple[int, str, str]] | None = None

    def lookup(self, name: str) -> CType | None:
        return self.names.get(name) or self.globals.get(name)

    # ---- types of expressions -----------------------------------------
    def type_of(self, node: Node | None) -> CType | None:
        if node is None:
            return None
        kind = node.type
        if kind == "identifier":
            return self.lookup(text(node))
        if kind == "field_expression":
            base = self.type_of(node.child_by_field_name("argument"))
            if base is None:
                return None
            op = node.child_by_field_name("operator")
            if op is not None and text(op) == "->":
                base = base.deref()
                if base is None:
                    return None
            return self.program.structs.member(base.struct, text(node.child_by_field_name("field")))
        if kind == "parenthesized_expression":
            inner = [c for c in node.named_children if c.type != "comment"]
            return self.type_of(inner[0]) if inner else None
        if kind == "pointer_expression":
            inner = self.type_of(node.child_by_field_name("argument"))
            if inner is None:
                return None
            op = text(node.child_by_field_name("operator"))
            return inner.address() if op == "&" else inner.deref()
        if kind == "subscript_expression":
            inner = self.type_of(node.child_by_field_name("argument"))
            return inner.deref() if inner else None
        if kind == "cast_expression":
            tdesc = node.child_by_field_name("type")
            if tdesc is None:
                return None
            base = specifier_type(tdesc.child_by_field_name("type"))
            _, ctype = declarator_name_type(tdesc.child_by_field_name("declarator"), base)
            return ctype
        if kind == "call_expression":
            return self._call_type(node)
        if kind == "conditional_expression":
            return self.type_of(node.child_by_field_name("consequence"))
        if kind == "assignment_expression":
            return self.type_of(node.child_by_field_name("left"))
        return None

    def _call_type(self, node: Node) -> CType | None:
        fn = node.child_by_field_name("function")
        if fn is None:
            return None
        if fn.type == "identifier":
            name = text(fn)
            if name in _CONTAINER_MACROS:
                args = node.child_by_field_name("arguments")
                real = self.src_of(args) if args is not None else ""
                parts = [p.strip() for p in real.strip("()").split(",")]
                k = _CONTAINER_MACROS[name]
                if len(parts) > k:
                    return CType(" ".join(parts[k].split()), 1)
                return None
            sig = self.program.functions.get(name)
            return sig.returns if sig else None
        ftype = self.type_of(fn)
        if ftype is not None and ftype.is_function_pointer:
            return CType(ftype.name, ftype.depth)
        if fn.type == "call_expression":  # FNAME(x)(args)
            sig = self.program.functions.get(" ".join(text(fn).split()))
            return sig.returns if sig else None
        return None

    # ---- flow facts ------------------------------------------------------
    def assignments(self) -> list[tuple[int, str, str]]:
        """(offset, target, value) for every assignment/initialiser in scope, in order."""
        if self._assigns is None:
            out = []
            if self.node is not None:
                for a in QueryCursor(_ASSIGN_QUERY).captures(self.node).get("a", []):
                    if a.type == "assignment_expression":
                        op = a.child_by_field_name("operator")
                        if op is not None and text(op) != "=":
                            continue
                        left, right = a.child_by_field_name("left"), a.child_by_field_name("right")
                    else:
                        left, right = a.child_by_field_name("declarator"), a.child_by_field_name("value")
                        while left is not None and left.type == "pointer_declarator":
                            left = left.child_by_field_name("declarator")
                    if left is None or right is None:
                        continue
                    out.append((a.start_byte, squash(self.src_of(left)), squash(self.src_of(right))))
            out.sort()
            self._assigns = out
        return self._assigns

    def values_before(self, target: str, offset: int) -> list[str]:
        """Values assigned to `target` (squashed text) before `offset`, in order."""
        key = squash(target)
        return [v for at, t, v in self.assignments() if t == key and at < offset]

    def values_anywhere(self, target: str) -> list[str]:
        key = squash(target)
        return [v for _, t, v in self.assignments() if t == key]

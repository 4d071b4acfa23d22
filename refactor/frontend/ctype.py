"""Static C types, just enough to know what an expression's base is.

A type is kept as (spelling, pointer depth): `struct kvm_mmu *` is
("struct kvm_mmu", 1).  Struct members come from the tree's own headers, so a
field that exists in one kernel and not another is typed accordingly.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from tree_sitter import Node


@dataclass(frozen=True, slots=True)
class CType:
    name: str  # "struct kvm_mmu", "u64", "int", ...
    depth: int = 0  # pointer depth; arrays count as one level
    is_function_pointer: bool = False

    def __str__(self) -> str:
        return self.name + (" " + "*" * self.depth if self.depth else "")

    @property
    def struct(self) -> str | None:
        """`kvm_mmu` for struct kvm_mmu (at any depth), else None."""
        head, _, tail = self.name.partition(" ")
        return tail if head in ("struct", "union") and tail else None

    def deref(self) -> "CType | None":
        return CType(self.name, self.depth - 1) if self.depth > 0 else None

    def address(self) -> "CType":
        return CType(self.name, self.depth + 1)


def text(node: Node | None) -> str:
    return node.text.decode("utf-8", "replace") if node is not None else ""


def specifier_type(type_node: Node | None) -> str:
    """Spelling of a declaration's type specifier (struct foo, u64, ...)."""
    if type_node is None:
        return "?"
    if type_node.type in ("struct_specifier", "union_specifier", "enum_specifier"):
        name = type_node.child_by_field_name("name")
        kw = type_node.type.split("_")[0]
        return f"{kw} {text(name)}" if name is not None else f"{kw} <anonymous>"
    return " ".join(text(type_node).split())


def declarator_name_type(decl: Node | None, base: str) -> tuple[str | None, CType]:
    """Name and type declared by a declarator on top of `base`."""
    depth = 0
    fnptr = False
    node = decl
    while node is not None:
        kind = node.type
        if kind in ("identifier", "field_identifier", "type_identifier"):
            return text(node), CType(base, depth, fnptr)
        if kind in ("pointer_declarator", "abstract_pointer_declarator"):
            depth += 1
        elif kind in ("array_declarator", "abstract_array_declarator"):
            depth += 1
        elif kind == "function_declarator":
            inner = node.child_by_field_name("declarator")
            # (*fn)(args): a function pointer; its call returns `base`.
            if inner is not None and inner.type == "parenthesized_declarator":
                fnptr = True
            elif inner is not None and inner.type in ("identifier", "field_identifier"):
                return text(inner), CType(base, depth, True)
            elif inner is not None and inner.type == "function_declarator":
                # FNAME(name)(args): the kernel's token-pasted function names.
                return text(inner), CType(base, depth, True)
        elif kind == "init_declarator":
            pass
        elif kind == "parenthesized_declarator":
            pass
        elif kind == "attributed_declarator":
            pass
        else:
            return None, CType(base, depth, fnptr)
        nxt = node.child_by_field_name("declarator")
        if nxt is None:
            nxt = next((c for c in node.named_children
                        if c.type.endswith("declarator") or c.type in ("identifier", "field_identifier")),
                       None)
        node = nxt
    return None, CType(base, depth, fnptr)


def declared(node: Node) -> list[tuple[str, CType, Node]]:
    """(name, type, declarator node) for a declaration/field/parameter node."""
    base = specifier_type(node.child_by_field_name("type"))
    out = []
    for child in node.children_by_field_name("declarator"):
        name, ctype = declarator_name_type(child, base)
        if name:
            out.append((name, ctype, child))
    return out


@dataclass
class StructTable:
    """Members of every struct/union defined in the tree (nested ones flattened)."""

    members: dict[str, dict[str, CType]] = field(default_factory=dict)
    where: dict[str, tuple[str, int]] = field(default_factory=dict)  # struct -> (file, line)

    def member(self, struct: str | None, name: str) -> CType | None:
        if struct is None:
            return None
        return self.members.get(struct, {}).get(name)

    def add_struct(self, name: str, body: Node, file: str) -> None:
        fields: dict[str, CType] = self.members.setdefault(name, {})
        self.where.setdefault(name, (file, body.start_point[0] + 1))
        self._collect(body, fields)

    def _collect(self, body: Node, fields: dict[str, CType]) -> None:
        for child in body.named_children:
            if child.type == "field_declaration":
                decls = declared(child)
                for fname, ctype, _ in decls:
                    fields.setdefault(fname, ctype)
                tnode = child.child_by_field_name("type")
                if not decls and tnode is not None:
                    # Anonymous struct/union member: its fields are the parent's.
                    inner = tnode.child_by_field_name("body")
                    if inner is not None:
                        self._collect(inner, fields)
            elif child.type in ("preproc_if", "preproc_ifdef", "preproc_else", "preproc_elif"):
                self._collect(child, fields)


@dataclass
class FunctionSig:
    name: str
    returns: CType
    params: list[tuple[str, CType]]
    file: str
    line: int


def walk_nodes(node: Node):
    """Every node below `node` (itself first), in source order, without recursion."""
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        stack.extend(reversed(n.children))


def function_params(fn: Node) -> list[Node]:
    """The parameter declarations of a function definition or declaration."""
    decl = fn.child_by_field_name("declarator")
    while decl is not None and decl.type != "function_declarator":
        decl = decl.child_by_field_name("declarator")
    if decl is None:
        return []
    return [p for p in decl.child_by_field_name("parameters").named_children if p.type == "parameter_declaration"]

"""Which `struct kvm_mmu *` parameters and locals become `struct kvm_pagewalk *`.

A variable can be narrowed when every use of it is a walker use: a field that
moves to the walker, a comparison with a walker, or passing it on where a
walker is expected (a narrowed parameter of another function, or the walker
argument of a walker function pointer such as gva_to_gpa).  That last clause
makes it a fixpoint over the call graph, across files: start from every
candidate and drop those with a use that needs a real struct kvm_mmu until
nothing changes (the greatest fixpoint).

Functions stored into a walker function-pointer field (`ctx->gva_to_gpa =
paging64_gva_to_gpa`) must take a walker: if such a parameter cannot be
narrowed, that is reported for a human.
"""
from __future__ import annotations

import re

from dataclasses import dataclass, field

from tree_sitter import Node

from refactor.frontend.ctype import text
from refactor.index.functions import Function, Macro, Prototype, Var
from refactor.rules import Rules, squash

Key = tuple[str, str]  # (function name, variable name)


def greatest_fixpoint(alive: set, deps: dict) -> dict:
    """Drop from `alive` every key that needs a key not alive, until nothing changes.

    `deps[key]` lists what a key needs to stay (for narrowing: the callee
    parameters a variable is passed to).  Returns {dropped key: the dependency
    that dropped it}.  The emulator's derivation (emulator/derive.py) decides
    its narrowing with this same function.
    """
    dropped: dict = {}
    changed = True
    while changed:
        changed = False
        for key in list(alive):
            for dep in deps.get(key, ()):
                if dep not in alive:
                    alive.discard(key)
                    dropped[key] = dep
                    changed = True
                    break
    return dropped


def walker_name(var: str, taken: set[str]) -> str:
    """The name a maintainer gives a variable that became a walker (mmu -> w, x_mmu -> x_walk)."""
    if "mmu" in var and var != "mmu":
        cand = var.replace("mmu", "walk")
    else:
        cand = "w"
    return cand if cand not in taken else var


@dataclass
class Narrowing:
    narrowed: set[Key] = field(default_factory=set)
    forced: dict[Key, str] = field(default_factory=dict)  # key -> why it must be a walker
    blocked: dict[Key, str] = field(default_factory=dict)  # candidate -> first use that needs a kvm_mmu
    # Walker function-pointer fields of struct kvm_mmu and their walker parameter indexes.
    walker_fnptr_params: dict[str, set[int]] = field(default_factory=dict)

    def param_narrowed(self, fn: str, index: int, defs: dict[str, list[Function]]) -> bool:
        for f in defs.get(fn, []):
            for p in f.params:
                if p.index == index:
                    return (fn, p.name) in self.narrowed
        return False


def is_mmu_ptr(var: Var, rules: Rules) -> bool:
    return var.ctype.name == f"struct {rules.types['mmu']}" and var.ctype.depth == 1


def walker_fnptr_params(fnptrs: dict[str, list[str]], rules: Rules) -> dict[str, set[int]]:
    """{field: {param index}} for walker function pointers taking a struct kvm_mmu *."""
    out: dict[str, set[int]] = {}
    mmu_ptr = f"struct {rules.types['mmu']} *"
    for name, params in fnptrs.items():
        f = rules.mmu_fields.get(name)
        if f is not None and f.moves_to_walker:
            idx = {i for i, t in enumerate(params) if t == mmu_ptr}
            if idx:
                out[name] = idx
    return out


def _unparen(node: Node) -> tuple[Node, Node | None]:
    parent = node.parent
    while parent is not None and parent.type == "parenthesized_expression":
        node, parent = parent, parent.parent
    return node, parent


class Narrower:
    def __init__(self, defs: dict[str, list[Function]], protos: dict[str, list[Prototype]],
                 rules: Rules, fnptr: dict[str, set[int]], naming: dict[str, set[str]] | None = None,
                 macros: dict[str, list[Macro]] | None = None):
        self.defs = defs
        self.protos = protos
        self.rules = rules
        self.fnptr = fnptr
        self.naming = naming or {}
        self.macros = macros or {}
        self.templates = [f for fs in defs.values() for f in fs if f.pattern is not None]
        self.walker_fields = {n for n, f in rules.mmu_fields.items() if f.moves_to_walker}
        self.builder_fields = {n for n, f in rules.mmu_fields.items() if not f.moves_to_walker}
        self.call_rules = {c.function: c for c in rules.calls}
        self.result = Narrowing(walker_fnptr_params=fnptr)

    def callee(self, name: str) -> str | None:
        """Definition name a call resolves to (macro-made names included)."""
        if name in self.defs:
            return name
        for t in self.templates:
            if t.pattern.match(name):
                return t.name
        for macro, prefixes in self.naming.items():
            for prefix in prefixes:
                if name.startswith(prefix) and f"{macro}({name[len(prefix):]})" in self.defs:
                    return f"{macro}({name[len(prefix):]})"
        return None

    def walker_macro_param(self, name: str, index: int) -> bool:
        """A function-like macro whose parameter is only ever used to reach walker fields."""
        found = self.macros.get(name)
        if not found:
            return False
        for macro in found:
            if index >= len(macro.params):
                return False
            p = re.escape(macro.params[index])
            uses = re.findall(rf"(?<![\w.>])\(?{p}\)?(->\w+|\W|$)", macro.body)
            for u in uses:  # an unused parameter (one PTTYPE's variant) takes anything
                if not (u.startswith("->") and u[2:] in self.walker_fields):
                    return False
        return True

    def walk_only_removed(self) -> bool:
        return all(m.removed for m in self.rules.vcpu_old.values() if m.kind == "walk_only_mmu")

    def walk_only_values(self, fn: Function, var: Var) -> bool:
        """Every value the variable takes is the walk-only MMU (whose builder fields had no reader)."""
        values = []
        init = var.declarator if var.declarator.type == "init_declarator" else None
        if init is not None and init.child_by_field_name("value") is not None:
            values.append(text(init.child_by_field_name("value")))
        for use in var.uses:
            expr, parent = _unparen(use)
            if parent is not None and parent.type == "assignment_expression" \
                    and parent.child_by_field_name("left") == expr:
                values.append(text(parent.child_by_field_name("right")))
        walk_only = {n for n, m in self.rules.vcpu_old.items() if m.kind == "walk_only_mmu"}

        def is_walk_only(value: str) -> bool:
            m = re.search(r"arch(?:\.|->)(\w+)\Z", squash(value))
            return squash(value).startswith("&") and m is not None and m.group(1) in walk_only
        return bool(values) and all(is_walk_only(v) for v in values)

    def candidates(self) -> dict[Key, list[tuple[Function, Var]]]:
        """Every struct kvm_mmu * variable; one key for all #ifdef variants of a function."""
        out: dict[Key, list[tuple[Function, Var]]] = {}
        for name, fns in self.defs.items():
            for fn in fns:
                for v in fn.params + fn.locals:
                    if is_mmu_ptr(v, self.rules):
                        out.setdefault((name, v.name), []).append((fn, v))
        return out

    def run(self) -> Narrowing:
        cands = self.candidates()
        self._forced(cands)
        alive = set(cands)
        deps: dict[Key, list[Key]] = {}
        reasons: dict[Key, str] = {}
        for key, variants in cands.items():
            deps[key] = []
            for fn, var in variants:
                need, why = self._analyse(fn, var, cands)
                deps[key] += need
                if why is not None:
                    alive.discard(key)
                    reasons[key] = why
        for key, dep in greatest_fixpoint(alive, deps).items():
            reasons[key] = f"passed to {dep[0]}() as {dep[1]}, which stays a struct kvm_mmu *"
        self.result.narrowed = alive
        self.result.blocked = {k: v for k, v in reasons.items() if k not in alive}
        return self.result

    def _forced(self, cands) -> None:
        """Functions stored into walker function pointers must take a walker."""
        for fns in self.defs.values():
            for fn in fns:
                body = fn.node.child_by_field_name("body")
                if body is None:
                    continue
                stack = [body]
                while stack:
                    node = stack.pop()
                    if node.type == "assignment_expression":
                        left, right = node.child_by_field_name("left"), node.child_by_field_name("right")
                        if left is not None and left.type == "field_expression" and right is not None \
                                and right.type == "identifier":
                            fld = text(left.child_by_field_name("field"))
                            target = self.callee(text(right))
                            for idx in self.fnptr.get(fld, ()):
                                for f in self.defs.get(target or "", []):
                                    for p in f.params:
                                        if p.index == idx:
                                            self.result.forced[(f.name, p.name)] = (
                                                f"stored into the walker function pointer {fld}")
                    stack.extend(node.children)

    def _analyse(self, fn: Function, var: Var, cands) -> tuple[list[Key], str | None]:
        """(candidates this one depends on, or the reason it cannot be narrowed)."""
        need: list[Key] = []
        for use in var.uses:
            expr, parent = _unparen(use)
            kind = parent.type if parent is not None else ""
            line = use.start_point[0] + 1
            if kind == "field_expression" and parent.child_by_field_name("argument") == expr:
                fld = text(parent.child_by_field_name("field"))
                if fld not in self.walker_fields:
                    if fld in self.builder_fields and _is_dropped_write(parent) \
                            and self.walk_only_removed() and self.walk_only_values(fn, var):
                        continue  # `g->sync_spte = NULL;` on the walk-only MMU is dropped
                    return need, f"line {line}: uses {var.name}->{fld}, a field that stays in struct kvm_mmu"
                continue
            if kind == "argument_list":
                call = parent.parent
                fnode = call.child_by_field_name("function")
                args = [c for c in parent.named_children if c.type != "comment"]
                idx = next(i for i, a in enumerate(args) if a == expr)
                if fnode.type == "field_expression":
                    fld = text(fnode.child_by_field_name("field"))
                    if idx in self.fnptr.get(fld, ()):
                        continue
                    return need, f"line {line}: passed to ->{fld}()"
                called = " ".join(text(fnode).split())
                rule = self.call_rules.get(called)
                if rule is not None and rule.arg == idx:
                    continue  # the call itself is rewritten (rules/mappings.toml [[calls]])
                target = self.callee(called)
                if target is None:
                    if self.walker_macro_param(called, idx):
                        continue
                    return need, f"line {line}: passed to {text(fnode)}(), not defined in the tree"
                dep = None
                for f in self.defs[target]:
                    for p in f.params:
                        if p.index == idx and (target, p.name) in cands:
                            dep = (target, p.name)
                if dep is None and any(p.index == idx and p.ctype.depth == 1
                                       and p.ctype.name == f"struct {self.rules.types['walker']}"
                                       for f in self.defs[target] for p in f.params):
                    continue  # it takes a walker already (a half-done tree)
                if dep is None:
                    return need, f"line {line}: passed to {target}() where no struct kvm_mmu * is taken"
                need.append(dep)
                continue
            if kind == "binary_expression" and text(parent.child_by_field_name("operator")) in ("==", "!="):
                other = parent.child_by_field_name("left")
                if other == expr:
                    other = parent.child_by_field_name("right")
                side = self.side(fn, other, cands)
                if side == "mmu":
                    return need, f"line {line}: compared with {squash(text(other))}, a struct kvm_mmu"
                if side.startswith("var:"):
                    need.append((fn.name, side[4:]))
                continue
            if kind == "assignment_expression":
                if parent.child_by_field_name("left") == expr:
                    continue  # a new value: converted at the assignment
                left = parent.child_by_field_name("left")
                if left.type == "identifier" and (fn.name, text(left)) in cands:
                    need.append((fn.name, text(left)))
                    continue
                return need, f"line {line}: stored into {text(left)}"
            if kind == "init_declarator":
                d = parent.child_by_field_name("declarator")
                while d is not None and d.type == "pointer_declarator":
                    d = d.child_by_field_name("declarator")
                if d is not None and (fn.name, text(d)) in cands:
                    need.append((fn.name, text(d)))
                    continue
                return need, f"line {line}: initialises a non-kvm_mmu variable"
            if kind in ("unary_expression",) and text(parent.child_by_field_name("operator")) == "!":
                continue
            if kind in ("if_statement", "while_statement", "condition_clause"):
                continue
            return need, f"line {line}: used as {kind or 'a value'}"
        return need, None

    def side(self, fn: Function, node: Node, cands) -> str:
        """Is a compared expression a walker, an MMU, or a variable to decide?"""
        s = squash(text(node)).lstrip("&")
        for member, info in self.rules.vcpu_old.items():
            if re.search(rf"arch(?:\.|->){member}\Z", s):
                walkerish = info.kind in ("walker_pointer", "walk_only_mmu") or info.compare_as_walker
                return "walker" if walkerish else "mmu"
        if node.type == "identifier" and (fn.name, s) in cands:
            return f"var:{s}"
        return "other"


def _is_dropped_write(field_expr: Node) -> bool:
    """`x->f = v;` (or `x->f.g = v;`) as a whole statement."""
    node = field_expr
    while node.parent is not None and node.parent.type == "field_expression" \
            and node.parent.child_by_field_name("argument") == node:
        node = node.parent
    parent = node.parent
    return (parent is not None and parent.type == "assignment_expression"
            and parent.child_by_field_name("left") == node
            and parent.parent is not None and parent.parent.type == "expression_statement")


def narrow(defs, protos, fnptrs: dict[str, list[str]], rules: Rules, naming=None, macros=None) -> Narrowing:
    return Narrower(defs, protos, rules, walker_fnptr_params(fnptrs, rules), naming, macros).run()

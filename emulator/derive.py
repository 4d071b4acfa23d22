"""Derive the NEW-layout plumbing from kvm_old.py with the rules (libcst).

Every old access path in kvm_old.py is rewritten through refactor.rules:
field accesses through `walker_access` (or a base's `known_guest_mmu` right
after `vcpu.arch.mmu = vcpu.arch.guest_mmu`), MMU pointers used as walkers
through `walker_pointer`, whole expressions/statements through the `exprs`
rules (nested-fault test, walk_mmu assignments...).  The rewriter keeps no
mapping of its own, so a wrong rule gives a wrong model and a divergence.

Which `struct kvm_mmu *` variables become `struct kvm_pagewalk *` is decided
as DOMAIN.md says the series did: a parameter or local whose every use is a
walker field, a comparison, or an argument to a narrowed parameter -- the
rewriter's fixpoint (refactor.plan.narrow.greatest_fixpoint) over this
module's uses.  Narrowed variables are named as the rewriter names them
(refactor.plan.narrow.walker_name: `mmu` -> `w`, `fault_mmu` -> `fault_walk`).
"""
from __future__ import annotations

import re
import types
from dataclasses import dataclass, field
from pathlib import Path

import libcst as cst

from refactor.plan.narrow import greatest_fixpoint, walker_name
from refactor.rules import Rules, WalkerNames

OLD_SOURCE = Path(__file__).with_name("kvm_old.py")
MMU_ANNOTATION = "kvm_mmu"


class DeriveError(RuntimeError):
    """The old source uses a construct the rewriter does not understand."""


def norm(text: str) -> str:
    """Compare C and Python spellings: no spaces, `->` as `.`, no address-of."""
    text = re.sub(r"\s+", "", text).replace("->", ".").replace("&&", "\0")
    return text.replace("&", "").replace("\0", "&&")


def c_to_py(text: str) -> str:
    """A rules `new` expression (C) as Python."""
    t = text.strip().rstrip(";").replace("->", ".")
    t = t.replace("||", " or ").replace("&&", " and ")
    t = re.sub(r"&(?=[A-Za-z_(])", "", t)
    t = re.sub(r"!(?!=)", " not ", t)
    return re.sub(r"\s+", " ", t).strip()


def code(node: cst.CSTNode) -> str:
    return cst.Module(body=[]).code_for_node(node)


def _rule_regex(old: str, builder_fields: list[str]) -> re.Pattern:
    pat = re.escape(norm(old))
    pat = pat.replace("EXPR", r"(?P<expr>.+)")
    pat = pat.replace("FIELD", "(?P<field>" + "|".join(map(re.escape, builder_fields)) + ")")
    return re.compile(pat + r"\Z")


@dataclass
class FuncInfo:
    name: str
    params: list[str]
    candidates: dict[str, str | None] = field(default_factory=dict)   # var -> alias (old C base)
    param_vars: set[str] = field(default_factory=set)
    bad: set[str] = field(default_factory=set)
    deps: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    narrowed: set[str] = field(default_factory=set)


class _Context:
    """Shared classification of expressions for analysis and rewriting."""

    def __init__(self, rules: Rules, names: WalkerNames):
        self.rules = rules
        self.names = names
        self.members = set(rules.vcpu_old)
        # The fault-MMU pointer, and the MMU whose walker is {ngpa} (rules/layout.toml).
        self.fault_mmu = rules.member_of_kind("mmu_pointer")
        self.ngpa_mmu = next((n for n, m in rules.vcpu_old.items() if m.kind == "mmu" and m.walker == "ngpa"),
                             None)
        self.removed = {n for n, m in rules.vcpu_old.items() if m.removed}
        # Walker function-pointer fields -> indexes of their struct kvm_mmu * arguments
        # (walker_fn_fields(), as the rewriter's walker_fnptr_params reads the C types).
        self.walker_fn_fields: dict[str, set[int]] = {}

    def member_of(self, node) -> str | None:
        if (isinstance(node, cst.Attribute) and isinstance(node.value, cst.Attribute)
                and isinstance(node.value.value, cst.Name) and node.value.value.value == "vcpu"
                and node.value.attr.value == "arch" and node.attr.value in self.members):
            return node.attr.value
        return None

    def mmu_typed(self, node, fi: FuncInfo | None) -> bool:
        if self.member_of(node):
            return True
        if isinstance(node, cst.Name) and fi is not None:
            return node.value in fi.candidates
        if isinstance(node, cst.IfExp):
            return self.mmu_typed(node.body, fi) and self.mmu_typed(node.orelse, fi)
        return False


class _Analyzer(cst.CSTVisitor):
    """Collect MMU-typed variables and how each occurrence uses them."""

    def __init__(self, ctx: _Context, funcs: set[str]):
        self.ctx = ctx
        self.funcs = funcs
        self.infos: dict[str, FuncInfo] = {}
        self.fi: FuncInfo | None = None
        self.allowed: set[int] = set()
        self.dep_of: dict[int, tuple[str, int]] = {}
        self.occurrences: list[tuple[FuncInfo, str, int]] = []
        self.attr_names: set[int] = set()

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        if self.fi is not None:
            raise DeriveError(f"nested function {node.name.value} not supported")
        params = [p.name.value for p in node.params.params]
        fi = FuncInfo(node.name.value, params)
        for p in node.params.params:
            if p.annotation and code(p.annotation.annotation) == MMU_ANNOTATION:
                fi.candidates[p.name.value] = None
                fi.param_vars.add(p.name.value)
                self.allowed.add(id(p.name))
        # Locals assigned from MMU expressions (single assignment gives an alias).
        counts: dict[str, int] = {}
        for stmt in node.body.body:
            if not isinstance(stmt, cst.SimpleStatementLine):
                continue
            for small in stmt.body:
                if isinstance(small, cst.Assign) and len(small.targets) == 1 and isinstance(
                        small.targets[0].target, cst.Name):
                    var = small.targets[0].target.value
                    counts[var] = counts.get(var, 0) + 1
                    if self.ctx.mmu_typed(small.value, fi):
                        member = self.ctx.member_of(small.value)
                        fi.candidates[var] = f"vcpu->arch.{member}" if member else None
        for var, n in counts.items():
            if n > 1 and var in fi.candidates:
                fi.candidates[var] = None
        self.infos[fi.name] = fi
        self.fi = fi

    def leave_FunctionDef(self, node) -> None:
        self.fi = None

    def _cand(self, node) -> bool:
        return (self.fi is not None and isinstance(node, cst.Name)
                and node.value in self.fi.candidates)

    def visit_Attribute(self, node: cst.Attribute) -> None:
        self.attr_names.add(id(node.attr))
        if self._cand(node.value):
            f = self.ctx.rules.mmu_fields.get(node.attr.value)
            if f is not None and f.moves_to_walker:
                self.allowed.add(id(node.value))

    def visit_Call(self, node: cst.Call) -> None:
        for i, arg in enumerate(node.args):
            if not self._cand(arg.value):
                continue
            if isinstance(node.func, cst.Name) and node.func.value in self.funcs:
                self.dep_of[id(arg.value)] = (node.func.value, i)
            elif (isinstance(node.func, cst.Attribute)
                  and i in self.ctx.walker_fn_fields.get(node.func.attr.value, ())):
                self.allowed.add(id(arg.value))

    def visit_Comparison(self, node: cst.Comparison) -> None:
        for operand in [node.left] + [c.comparator for c in node.comparisons]:
            if self._cand(operand):
                self.allowed.add(id(operand))

    def visit_AssignTarget(self, node: cst.AssignTarget) -> None:
        if self._cand(node.target):
            self.allowed.add(id(node.target))

    def visit_Name(self, node: cst.Name) -> None:
        if self._cand(node) and id(node) not in self.attr_names:
            self.occurrences.append((self.fi, node.value, id(node)))


def walker_fn_fields(module: cst.Module, rules: Rules) -> dict[str, set[int]]:
    """{field: argument indexes} of the function pointers that move to the walker (layout.toml),
    from the functions the model stores into them: their `kvm_mmu`-annotated parameters."""
    mmu_args: dict[str, set[int]] = {}
    for stmt in module.body:
        if isinstance(stmt, cst.FunctionDef):
            mmu_args[stmt.name.value] = {i for i, p in enumerate(stmt.params.params)
                                         if p.annotation and code(p.annotation.annotation) == MMU_ANNOTATION}
        elif isinstance(stmt, cst.SimpleStatementLine):  # paging64_gva_to_gpa = paging_gva_to_gpa
            for small in stmt.body:
                if isinstance(small, cst.Assign) and isinstance(small.value, cst.Name) \
                        and small.value.value in mmu_args:
                    for t in small.targets:
                        if isinstance(t.target, cst.Name):
                            mmu_args[t.target.value] = mmu_args[small.value.value]
    out: dict[str, set[int]] = {}

    class Stores(cst.CSTVisitor):
        def visit_Assign(self, node: cst.Assign) -> None:
            for t in node.targets:
                f = rules.mmu_fields.get(t.target.attr.value) if isinstance(t.target, cst.Attribute) else None
                if f is not None and f.moves_to_walker and isinstance(node.value, cst.Name) \
                        and mmu_args.get(node.value.value):
                    out.setdefault(f.name, set()).update(mmu_args[node.value.value])

    module.visit(Stores())
    return out


def analyse(module: cst.Module, ctx: _Context) -> tuple[dict[str, FuncInfo], set[int]]:
    funcs = {s.name.value for s in module.body if isinstance(s, cst.FunctionDef)}
    ctx.walker_fn_fields = walker_fn_fields(module, ctx.rules)
    an = _Analyzer(ctx, funcs)
    module.visit(an)
    for fi, var, nid in an.occurrences:
        if nid in an.allowed:
            continue
        if nid in an.dep_of:
            fi.deps.setdefault(var, []).append(an.dep_of[nid])
        else:
            fi.bad.add(var)
    # (function, variable) keys; an argument past the callee's parameters needs a key never alive.
    alive = {(fi.name, v) for fi in an.infos.values() for v in fi.candidates if v not in fi.bad}
    deps = {(fi.name, var): [(fname, an.infos[fname].params[index] if index < len(an.infos[fname].params)
                              else f"#{index}") for fname, index in needs]
            for fi in an.infos.values() for var, needs in fi.deps.items()}
    greatest_fixpoint(alive, deps)
    for fi in an.infos.values():
        fi.narrowed = {v for v in fi.candidates if (fi.name, v) in alive}
    return an.infos, an.attr_names


class _Rewriter(cst.CSTTransformer):
    def __init__(self, ctx: _Context, infos: dict[str, FuncInfo], attr_names: set[int]):
        self.ctx = ctx
        self.rules = ctx.rules
        self.names = ctx.names
        self.infos = infos
        self.attr_names = attr_names
        self.fi: FuncInfo | None = None
        self.known_guest = False
        builder = [n for n, f in self.rules.mmu_fields.items() if not f.moves_to_walker]
        self.expr_rules = [(r, _rule_regex(r.old, builder)) for r in self.rules.exprs]
        self.applied: dict[str, int] = {}

    # -- helpers ------------------------------------------------------------
    def _new_name(self, var: str) -> str:
        if not self.fi or var not in self.fi.narrowed:
            return var
        return walker_name(var, set(self.fi.params) | set(self.fi.candidates))

    def _is_walker(self, node) -> bool:
        if isinstance(node, cst.Name):
            return bool(self.fi) and node.value in self.fi.narrowed
        member = self.ctx.member_of(node)
        return member is not None and member in self.ctx.removed

    def _old_base(self, node) -> str | None:
        """The old C base an MMU expression stands for (alias-resolved)."""
        member = self.ctx.member_of(node)
        if member:
            return f"vcpu->arch.{member}"
        if isinstance(node, cst.Name) and self.fi and node.value in self.fi.candidates:
            return self.fi.candidates[node.value] or node.value
        return None

    def _count(self, key: str) -> None:
        self.applied[key] = self.applied.get(key, 0) + 1

    def _known_guest_base(self, old_base: str) -> str | None:
        if self.known_guest:
            base = self.rules.base_for(old_base)  # only the fault-MMU base has known_guest_mmu
            if base.known_guest_mmu:
                self._count(f"{base.id} (known_guest_mmu)")
                return self.names.fill(base.known_guest_mmu)
        return None

    def _pointer(self, old_base: str) -> str:
        known = self._known_guest_base(old_base)
        if known:
            return known
        self._count(self.rules.base_for(old_base).id)
        return self.rules.walker_pointer(old_base, self.names)

    def _access(self, old_base: str, field_name: str) -> str:
        self._count(self.rules.base_for(old_base).id)
        return self.rules.walker_access(old_base, field_name, self.names)

    def to_walker(self, orig, upd):
        if self._is_walker(orig) and isinstance(orig, cst.Name):
            return upd
        if isinstance(orig, cst.IfExp):
            return upd.with_changes(body=self.to_walker(orig.body, upd.body),
                                    orelse=self.to_walker(orig.orelse, upd.orelse))
        base = self._old_base(orig)
        if base is None:
            return upd
        return cst.parse_expression(c_to_py(self._pointer(base)))

    def _match_rule(self, text: str):
        key = norm(text)
        for rule, rx in self.expr_rules:
            if rx.match(key):
                self._count(rule.id)
                return rule
        return None

    def _c_of(self, node) -> str:
        """C-ish text of a node with local MMU aliases replaced by their base."""
        if isinstance(node, cst.Attribute) and isinstance(node.value, cst.Name):
            alias = self.fi.candidates.get(node.value.value) if self.fi else None
            if alias:
                return f"{alias}.{node.attr.value}"
        return code(node)

    # -- functions and names ------------------------------------------------
    def visit_FunctionDef(self, node) -> None:
        self.fi = self.infos[node.name.value]
        self.known_guest = False

    def leave_FunctionDef(self, original, updated):
        self.fi = None
        return updated

    def leave_Name(self, original, updated):
        if id(original) in self.attr_names or not self.fi:
            return updated
        return updated.with_changes(value=self._new_name(original.value))

    def leave_Param(self, original, updated):
        if self.fi and original.name.value in self.fi.narrowed and updated.annotation:
            return updated.with_changes(
                annotation=cst.Annotation(cst.Name(self.rules.types["walker"])))
        return updated

    # -- field accesses -----------------------------------------------------
    def leave_Attribute(self, original, updated):
        f = self.rules.mmu_fields.get(original.attr.value)
        if f is None or not self.fi:
            return updated
        value = original.value
        if isinstance(value, cst.Name) and value.value in self.fi.narrowed:
            if not f.moves_to_walker:
                raise DeriveError(f"{self.fi.name}: builder field {f.name} on a walker")
            return cst.parse_expression(f"{self._new_name(value.value)}.{f.path}")
        old_base = self._old_base(value)
        if old_base is None:
            return updated
        if not f.moves_to_walker:
            if isinstance(value, cst.Name):
                return cst.parse_expression(f"{value.value}.{f.path}")
            return cst.parse_expression(c_to_py(self._access(old_base, f.name)))
        known = self._known_guest_base(old_base)
        if known:
            return cst.parse_expression(c_to_py(f"{known}.{f.path}"))
        return cst.parse_expression(c_to_py(self._access(old_base, f.name)))

    # -- walkers passed on, compared, assigned ------------------------------
    def leave_Call(self, original, updated):
        positions: set[int] = set()
        if isinstance(original.func, cst.Name) and original.func.value in self.infos:
            callee = self.infos[original.func.value]
            positions = {i for i, p in enumerate(callee.params) if p in callee.narrowed}
        elif (isinstance(original.func, cst.Attribute)
              and original.func.attr.value in self.ctx.walker_fn_fields):
            positions = set(self.ctx.walker_fn_fields[original.func.attr.value])
        if not positions:
            return updated
        args = list(updated.args)
        for i in positions:
            if i < len(args) and self.ctx.mmu_typed(original.args[i].value, self.fi):
                args[i] = args[i].with_changes(value=self.to_walker(original.args[i].value,
                                                                    args[i].value))
        return updated.with_changes(args=args)

    def leave_Comparison(self, original, updated):
        if len(original.comparisons) != 1 or not isinstance(
                original.comparisons[0].operator, (cst.Equal, cst.NotEqual)):
            return updated
        rule = self._match_rule(code(original))
        if rule is not None:
            return cst.parse_expression(c_to_py(self.names.fill(rule.new)))
        left, right = original.left, original.comparisons[0].comparator
        if not (self._is_walker(left) or self._is_walker(right)):
            return updated
        for side in (left, right):
            member = self.rules.vcpu_old.get(self.ctx.member_of(side) or "")
            if member is not None and member.kind == "mmu" and not getattr(
                    member, "compare_as_walker", True):
                # e.g. root_mmu: its walker also replaces nested_mmu, so the test changes meaning.
                raise DeriveError(f"{self.fi.name}: comparing a walker with "
                                  f"vcpu->arch.{member.name} has no walker equivalent")
        comp = updated.comparisons[0]
        return updated.with_changes(
            left=self.to_walker(left, updated.left),
            comparisons=[comp.with_changes(comparator=self.to_walker(right, comp.comparator))])

    def leave_Assign(self, original, updated):
        target = original.targets[0].target
        if isinstance(target, cst.Name) and self.fi and target.value in self.fi.candidates:
            alias = self.fi.candidates[target.value]
            removed = alias and alias.split(".")[-1] in self.ctx.removed
            if target.value in self.fi.narrowed or removed:
                return updated.with_changes(value=self.to_walker(original.value, updated.value))
        return updated

    def leave_SimpleStatementLine(self, original, updated):
        small = original.body[0]
        if not isinstance(small, cst.Assign) or not self.fi:
            return updated
        target = small.targets[0].target
        text = f"{self._c_of(target)} = {code(small.value)};"
        if self.ctx.member_of(target) == self.ctx.fault_mmu:
            # Remember what the fault MMU was just set to (nested EPT/NPT setup).
            self.known_guest = self.ctx.member_of(small.value) == self.ctx.ngpa_mmu
        rule = self._match_rule(text)
        if rule is None:
            return updated
        if not rule.new.strip():
            return updated.with_changes(body=[cst.Pass()])
        return cst.parse_statement(c_to_py(self.names.fill(rule.new)) + "\n")


def derive_source(rules: Rules, names: WalkerNames, source: str | None = None) -> str:
    """The new-layout plumbing as Python source."""
    return _derive(rules, names, source)[0]


def rules_applied(rules: Rules, names: WalkerNames, source: str | None = None) -> dict[str, int]:
    """Rule id -> how often the derivation applied it (bases, exprs): the entries the model reads.

    The rewriter must read the same entries (tests/test_rule_consumers.py), so that a wrong
    entry changes the C output and the model alike."""
    out: dict[str, int] = {}
    for key, n in _derive(rules, names, source)[1].items():
        rule_id = key.split(" ")[0]  # "fault-mmu-walker (known_guest_mmu)" reads that entry too
        out[rule_id] = out.get(rule_id, 0) + n
    return out


def _derive(rules: Rules, names: WalkerNames, source: str | None) -> tuple[str, dict[str, int]]:
    source = source if source is not None else OLD_SOURCE.read_text()
    module = cst.parse_module(source)
    ctx = _Context(rules, names)
    infos, attr_names = analyse(module, ctx)
    rewriter = _Rewriter(ctx, infos, attr_names)
    out = module.visit(rewriter)
    used = ", ".join(f"{k} x{v}" for k, v in sorted(rewriter.applied.items()))
    narrowed = sorted(f"{f.name}({v})" for f in infos.values() for v in sorted(f.narrowed))
    header = (f"# Derived by emulator/derive.py from kvm_old.py with rules/ "
              f"(gva={names.gva}, ngpa={names.ngpa}).  Do not edit.\n"
              + _wrap("# rules applied: " + used)
              + _wrap("# narrowed to struct kvm_pagewalk *: " + ", ".join(narrowed)))
    return header + out.code, rewriter.applied


def _wrap(text: str, width: int = 99) -> str:
    lines, line = [], ""
    for word in text.split(" "):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = "#  " + word
        else:
            line = f"{line} {word}" if line else word
    return "\n".join(lines + [line]) + "\n"


_CACHE: dict = {}


def compile_model(source: str, tag: str) -> types.ModuleType:
    mod = types.ModuleType(f"emulator._derived_{tag}")
    mod.__dict__["__package__"] = "emulator"
    exec(compile(source, f"<derived {tag}>", "exec"), mod.__dict__)
    return mod


def derived_model(rules: Rules, names: WalkerNames) -> types.ModuleType:
    """The derived new-layout module, compiled once per (rules, names)."""
    key = (id(rules), names.gva, names.ngpa)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is rules:
        return hit[1]
    mod = compile_model(derive_source(rules, names), f"{names.gva}_{names.ngpa}")
    _CACHE[key] = (rules, mod)
    return mod

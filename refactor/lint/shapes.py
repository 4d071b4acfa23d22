"""Findings from shapes the index does not track (rules KVM010-KVM020 of rules/lint.toml).

Translations through a walker, the nested-fault test, and calls to
functions narrowed to struct kvm_pagewalk.  Only files whose text contains
a trigger name are parsed (or taken from the index), and expressions are
typed with the index's typer (refactor.index.program).
"""
from __future__ import annotations

import re

from tree_sitter import Node

from refactor.frontend.ctype import text
from refactor.frontend.lexer import tokens
from refactor.lint.engine import Finding, Unit, _finding, _is_mmu_type, _strip
from refactor.lint.registry import LintRule, LintRules
from refactor.frontend.parse import ParsedFile
from refactor.index.program import Scope, function_name, squash

_ARCH_MEMBER = re.compile(r"&?\(?\w+(?:->|\.)arch\.(\w+)\)?")
_MMU_W = re.compile(r"(.+)->w")


class Shapes:
    """Walk the syntax of files that contain a trigger name, with the index's typer."""

    def __init__(self, unit: Unit, lint: LintRules):
        self.unit, self.lint, self.rules = unit, lint, lint.rules
        self.settings = lint.settings
        self.roles = {unit.names.gva: "gva", unit.names.ngpa: "ngpa"}
        self.scopes: dict[tuple[str, int, int], Scope] = {}
        self.fragments: dict[tuple[str, int], object] = {}
        self.out: list[Finding] = []

    def files(self) -> list[str]:
        return sorted({r.file for r in self.unit.references} | set(self.unit.parsed))

    def nodes(self, rel: str, names: set[str]):
        """(node, ParsedFile, fragment) for each code occurrence of `names` the parser read."""
        src = self.unit.source(rel)
        if not src or not any(n.encode() in src for n in names):
            return
        pf = self.unit.parsed_file(rel)
        for tok in tokens(src, names):
            if tok.context != "code":
                continue
            frag = pf.fragment_for(tok.start, tok.end)
            if pf.in_error(tok.start, tok.end) and not frag.is_macro:
                frag = self.function_fragment(pf, tok.start)
                if frag is None:
                    continue
            node = frag.node_at(tok.start, tok.end)
            if node is not None and not node.has_error:
                yield node, pf, frag

    def function_fragment(self, pf: ParsedFile, at: int):
        """The function around `at`, parsed on its own (kernel style: `{` and `}` at column 0).

        One construct the parser cannot read makes an ERROR node that can
        swallow the rest of a file (7.3's vmx/nested.c from line 7146 on);
        the functions after it are still well-formed by themselves.
        """
        src = pf.src
        open_ = src.rfind(b"\n{\n", 0, at)
        close = src.find(b"\n}\n", at)
        if open_ < 0 or close < 0 or src.rfind(b"\n}\n", 0, at) > open_:
            return None
        head = max(src.rfind(b"\n\n", 0, open_), src.rfind(b"*/\n", 0, open_) + 1,
                   src.rfind(b";\n", 0, open_), src.rfind(b"}\n", 0, open_)) + 2
        key = (pf.rel, head)
        if key not in self.fragments:
            from refactor.frontend import macros
            from refactor.frontend.parse import _PARSER, Fragment

            masked, _ = macros.mask(src[head:close + 2])
            tree = _PARSER.parse(masked)
            self.fragments[key] = Fragment(tree, head, head, close + 2, False)
        return self.fragments[key]

    def scope(self, node: Node, pf: ParsedFile, frag) -> Scope:
        fn = node
        while fn is not None and fn.type != "function_definition":
            fn = fn.parent
        key = (pf.rel, id(frag), fn.start_byte if fn is not None else -1)
        if key not in self.scopes:
            self.scopes[key] = Scope(self.unit.program, fn, lambda n: pf.text(n, frag), {})
        return self.scopes[key]

    def report(self, rule: LintRule, pf: ParsedFile, frag, node: Node, fix: str | None,
               origin: int | None = None, **values) -> None:
        """Report at `node`; in a patch whose added lines do not hold it, at `origin`
        (the added assignment that made the walker wrong), else not at all."""
        start = node.start_byte + frag.offset
        line = pf.src.count(b"\n", 0, start) + 1
        if not self.unit.wanted(pf.rel, line):
            if origin is None:
                return
            start = origin + frag.offset
            line = pf.src.count(b"\n", 0, start) + 1
            if not self.unit.wanted(pf.rel, line):
                return
        col = start - (pf.src.rfind(b"\n", 0, start) + 1) + 1
        fn = node
        while fn is not None and fn.type != "function_definition":
            fn = fn.parent
        expr = " ".join(pf.text(node, frag).split())
        self.out.append(_finding(rule, self.unit, pf.rel, line, col, expr,
                                 function_name(fn) if fn is not None else None, fix, values))

    # -- what an expression designates
    def role(self, expr: str, scope: Scope, offset: int, depth: int = 0) -> str | None:
        """gva / ngpa (a vcpu walker), mmu-w (an MMU's walker) or None (unknown)."""
        return self.role_origin(expr, scope, offset, depth)[0]

    def role_origin(self, expr: str, scope: Scope, offset: int, depth: int = 0) -> tuple[str | None, int | None]:
        """The role, and the offset of the assignment that gave a local its walker."""
        t = _strip(expr)
        m = _ARCH_MEMBER.fullmatch(t)
        if m and m.group(1) in self.roles:
            return self.roles[m.group(1)], None
        m = _MMU_W.fullmatch(t)
        if m:
            base = m.group(1)
            if not self.rules.base_for(base.lstrip("&")).generic or base in self.settings["mmu_pointer_names"]:
                return "mmu-w", None
            btype = scope.lookup(base) if re.fullmatch(r"\w+", base) else None
            return ("mmu-w" if btype is not None and _is_mmu_type(str(btype), self.lint) else None), None
        if re.fullmatch(r"\w+", t) and depth < 3:
            key = squash(t)
            assigned = [(at, v) for at, target, v in scope.assignments() if target == key and at < offset]
            if assigned:
                at, value = assigned[-1]
                role, origin = self.role_origin(value, scope, offset, depth + 1)
                return role, origin if origin is not None else at
        return None, None

    def address_kind(self, node: Node, scope: Scope) -> str | None:
        ctype = scope.type_of(node)
        s = self.settings
        if ctype is not None:
            if ctype.depth == 0 and ctype.name in s["gva_address_types"]:
                return "gva"
            if ctype.depth == 0 and ctype.name in s["ngpa_address_types"]:
                return "ngpa"
            return None
        if node.type not in ("identifier", "field_expression"):
            return None
        word = text(node).rsplit(".", 1)[-1].rsplit(">", 1)[-1].lower()
        if any(w in word for w in s["gva_address_words"]):
            return "gva"
        if any(w in word for w in s["ngpa_address_words"]):
            return "ngpa"
        return None

    # -- KVM010 / KVM011
    def translations(self) -> None:
        rules = [r for r in self.lint.with_pattern("translation") if r.applies(self.unit.layout)]
        if not rules:
            return
        s = self.settings
        for rel in self.files():
            for node, pf, frag in self.nodes(rel, {s["translate_field"]}):
                fexpr = node.parent
                call = fexpr.parent if fexpr is not None else None
                if (fexpr is None or fexpr.type != "field_expression" or call is None
                        or call.type != "call_expression" or call.child_by_field_name("function") != fexpr):
                    continue
                args = [a for a in call.child_by_field_name("arguments").named_children if a.type != "comment"]
                if len(args) <= max(s["translate_walker_arg"], s["translate_address_arg"]):
                    continue
                scope = self.scope(node, pf, frag)
                kind = self.address_kind(args[s["translate_address_arg"]], scope)
                if kind is None:
                    continue
                src_of = lambda n: pf.text(n, frag)  # noqa: E731
                for target in (fexpr.child_by_field_name("argument"), args[s["translate_walker_arg"]]):
                    role, origin = self.role_origin(src_of(target), scope, target.start_byte)
                    rule = next((r for r in rules if r.match["address"] == kind and role in r.match["walker"]),
                                None)
                    if rule is not None:
                        self.report(rule, pf, frag, target, self.lint.walker_of(rule.fix["walker_of"], self.unit.names),
                                    origin, arg=src_of(args[s["translate_address_arg"]]), role=_ROLE_TEXT.get(role, role))
                        break  # one finding per call: base and argument are usually the same walker

    # -- KVM012
    def nested_faults(self) -> None:
        rules = [r for r in self.lint.with_pattern("nested-fault") if r.applies(self.unit.layout)]
        if not rules:
            return
        for rel in self.files():
            for node, pf, frag in self.nodes(rel, {self.settings["nested_fault_field"]}):
                fexpr = node.parent
                assign = fexpr.parent if fexpr is not None else None
                if assign is None or assign.type != "assignment_expression" \
                        or assign.child_by_field_name("left") != fexpr:
                    continue
                value = assign.child_by_field_name("right")
                while value is not None and value.type == "parenthesized_expression" and value.named_children:
                    value = value.named_children[0]
                if value is None or value.type != "binary_expression" \
                        or text(value.child_by_field_name("operator")) not in ("==", "!="):
                    continue
                scope = self.scope(node, pf, frag)
                sides = [value.child_by_field_name("left"), value.child_by_field_name("right")]
                roles = [self.role(pf.text(n, frag), scope, n.start_byte) for n in sides]
                if "gva" in roles:
                    continue
                for side, role, other in zip(sides, roles, reversed(sides)):
                    rule = next((r for r in rules if role in r.match["walker"]), None)
                    if rule is not None:
                        fix = self.lint.expr_new(rule.fix["expr"], self.unit.names)
                        left = pf.text(other, frag).strip()
                        if re.fullmatch(r"\w+", left):  # the template's walker variable is `w`
                            fix = re.sub(r"^w\b", left, fix)
                        self.report(rule, pf, frag, side, fix, role=_ROLE_TEXT.get(role, role))
                        break

    # -- KVM020
    def narrowed_calls(self) -> None:
        rules = [r for r in self.lint.with_pattern("narrowed-call") if r.applies(self.unit.layout)]
        if not rules:
            return
        walker = f"struct {self.rules.types['walker']}"
        narrowed: dict[str, list[int]] = {}
        for name, sig in self.unit.program.functions.items():
            idx = [i for i, (_, t) in enumerate(sig.params) if t.name == walker and t.depth == 1]
            if idx:
                narrowed[name] = idx
        if not narrowed:
            return
        # FNAME(walk_addr_generic) is called as FNAME(walk_addr_generic)(...): search the inner name.
        inner = {re.sub(r"^\w+\((\w+)\)$", r"\1", n): n for n in narrowed}
        for rel in self.files():
            for node, pf, frag in self.nodes(rel, set(inner)):
                call, name = self._call_of(node, pf, frag, inner)
                if call is None:
                    continue
                args = [a for a in call.child_by_field_name("arguments").named_children if a.type != "comment"]
                scope = self.scope(node, pf, frag)
                for i in narrowed[name]:
                    if i < len(args) and self._is_mmu(args[i], scope, pf, frag):
                        arg = " ".join(pf.text(args[i], frag).split())
                        self.report(rules[0], pf, frag, args[i], self.lint.pointer_fix(arg, self.unit.names),
                                    callee=name, arg=arg)

    def _call_of(self, node: Node, pf: ParsedFile, frag, inner: dict[str, str]):
        name = inner.get(text(node))
        parent = node.parent
        if parent is not None and parent.type == "call_expression" and parent.child_by_field_name("function") == node:
            return (parent, name) if name == text(node) else (None, None)
        # FNAME(x)(args): node -> argument_list -> call FNAME(x) -> call (args)
        fcall = parent.parent if parent is not None and parent.type == "argument_list" else None
        outer = fcall.parent if fcall is not None else None
        if outer is not None and outer.type == "call_expression" and outer.child_by_field_name("function") == fcall \
                and squash(pf.text(fcall, frag)) == name:
            return outer, name
        return None, None

    def _is_mmu(self, arg: Node, scope: Scope, pf: ParsedFile, frag) -> bool:
        ctype = scope.type_of(arg)
        if ctype is not None:
            return ctype.depth == 1 and ctype.struct == self.rules.types["mmu"]
        t = _strip(pf.text(arg, frag))
        m = _ARCH_MEMBER.fullmatch(t)
        if m and m.group(1) in self.rules.vcpu_old and not self.rules.vcpu_old[m.group(1)].removed:
            kind = self.rules.vcpu_old[m.group(1)].kind
            # vcpu->arch.mmu is a pointer; root_mmu/guest_mmu are objects whose address is taken.
            return (kind == "mmu_pointer") == (not t.startswith("&"))
        return not self.unit.typed and t in self.settings["mmu_pointer_names"]


_ROLE_TEXT = {"ngpa": "the nGPA walker", "gva": "the GVA walker",
              "mmu-w": "an MMU's walker, the nGPA walker while L2 runs with nested TDP"}

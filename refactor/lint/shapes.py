"""Findings from shapes the index does not track (rules KVM010-KVM020 of rules/lint.toml).

Translations through a walker, the nested-fault test, and calls to
functions narrowed to struct kvm_pagewalk.  Only files whose text contains
a trigger name are parsed (or taken from the index), and expressions are
typed with the index's typer (refactor.index.program).
"""
from __future__ import annotations

import fnmatch
import re

from tree_sitter import Node

from refactor.frontend.ctype import text
from refactor.frontend.lexer import tokens
from refactor.lint.findings import Finding, Unit, bare_expr, is_mmu_type, make_finding
from refactor.lint.registry import LintRule, LintRules, handler
from refactor.frontend.parse import ParsedFile
from refactor.index.program import Scope, function_name, squash

# A function definition's first line, kernel style (name at column 0 or after the type).
_FN_HEAD = re.compile(r"^[A-Za-z_][^;=]*?\b([A-Za-z_]\w*(?:\(\w+\))?)\s*\(")
_HUNK_FUNCTION_NAME = "__kvm_refactor_lint_hunk"
_HUNK_FUNCTION = f"void {_HUNK_FUNCTION_NAME}(void)\n".encode()
_ARCH_MEMBER = re.compile(r"&?\(?\w+(?:->|\.)arch\.(\w+)\)?")
_MMU_W = re.compile(r"(.+?)(?:->|\.)w")


class Shapes:
    """Walk the syntax of files that contain a trigger name, with the index's typer."""

    def __init__(self, unit: Unit, lint: LintRules):
        self.unit, self.lint, self.rules = unit, lint, lint.rules
        self.settings = lint.settings
        self.roles = {unit.names.gva: "gva", unit.names.ngpa: "ngpa"}
        self.scopes: dict[tuple[str, int, int], Scope] = {}
        self.fragments: dict[tuple[str, int], object] = {}
        self.out: list[Finding] = []
        self._lines: dict[str, list[bytes]] = {}

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
                frag = self.function_fragment(pf, tok.start) or self.hunk_fragment(pf, tok.start)
                if frag is None:
                    continue
            node = frag.node_at(tok.start, tok.end)
            if (node is None or node.has_error or self._outside_function(node, pf)) and not frag.is_macro:
                # Hunks that start inside a function: parse the hunk as a function body.
                hunk = self.hunk_fragment(pf, tok.start)
                node = hunk.node_at(tok.start, tok.end) if hunk is not None else None
                frag = hunk
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

    def _outside_function(self, node: Node, pf: ParsedFile) -> bool:
        """In a patch's hunks, statements outside any function read as declarations: reparse."""
        if pf.rel not in self.unit.sections:
            return False
        while node is not None and node.type != "function_definition":
            node = node.parent
        return node is None

    def hunk_fragment(self, pf: ParsedFile, at: int):
        """The hunk around `at` (a patch read without its tree), parsed as a function body."""
        line = pf.src.count(b"\n", 0, at) + 1
        span = next(((lo, hi) for lo, hi, _ in self.unit.sections.get(pf.rel, ()) if lo <= line <= hi), None)
        if span is None:
            return None
        key = (pf.rel, "hunk", span)
        if key not in self.fragments:
            from refactor.frontend import macros
            from refactor.frontend.parse import _PARSER, Fragment

            starts = [0] + [i + 1 for i, c in enumerate(pf.src) if c == 10]
            lo = starts[span[0] - 1] if span[0] - 1 < len(starts) else len(pf.src)
            hi = starts[span[1]] if span[1] < len(starts) else len(pf.src)
            body, _ = macros.mask(pf.src[lo:hi])
            depth = body.count(b"{") - body.count(b"}")
            head = _HUNK_FUNCTION + b"{" * (1 + max(0, -depth)) + b"\n"
            close = body.find(b"*/")
            if close >= 0 and body.rfind(b"/*", 0, close) < 0:
                head += b"/*"  # the hunk starts inside a comment
            tail = b"\n" + b"}" * (1 + max(0, depth)) + b"\n"
            self.fragments[key] = Fragment(_PARSER.parse(head + body + tail), lo - len(head), lo, hi, False)
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
        name = function_name(fn) if fn is not None else None
        if name == _HUNK_FUNCTION_NAME:
            name = self.enclosing_function(pf.rel, line)
        expr = " ".join(pf.text(node, frag).split())
        self.out.append(make_finding(rule, self.unit, pf.rel, line, col, expr, name, fix, values))

    # -- what an expression designates
    def role(self, expr: str, scope: Scope, offset: int, depth: int = 0) -> str | None:
        """gva / ngpa (a vcpu walker), mmu-w (an MMU's walker) or None (unknown)."""
        return self.role_origin(expr, scope, offset, depth)[0]

    def role_origin(self, expr: str, scope: Scope, offset: int, depth: int = 0) -> tuple[str | None, int | None]:
        """The role, and the offset of the assignment that gave a local its walker."""
        t = bare_expr(expr)
        m = _ARCH_MEMBER.fullmatch(t)
        if m and m.group(1) in self.roles:
            return self.roles[m.group(1)], None
        m = _MMU_W.fullmatch(t)
        if m:
            return self.mmu_role(bare_expr(m.group(1)), scope, offset, depth), None
        if re.fullmatch(r"\w+", t) and depth < 3:
            key = squash(t)
            assigned = [(at, v) for at, target, v in scope.assignments() if target == key and at < offset]
            if assigned:
                at, value = assigned[-1]
                role, origin = self.role_origin(value, scope, offset, depth + 1)
                return role, origin if origin is not None else at
        return None, None

    def mmu_role(self, base: str, scope: Scope, offset: int, depth: int = 0) -> str | None:
        """The role of the walker of the MMU `base` designates; None when it is not an MMU."""
        # An MMU whose walker is fixed (root_mmu's is {gva}, guest_mmu's {ngpa}; the old
        # walk_mmu/nested_mmu are the {gva} tables): that walker.  vcpu->arch.mmu varies.
        fixed = self.mmu_walker_role(base, scope, offset, depth)
        if fixed is not None:
            return fixed
        if not self.rules.base_for(base.lstrip("&")).generic or base in self.settings.mmu_pointer_names:
            return "mmu-w"
        btype = scope.lookup(base) if re.fullmatch(r"\w+", base) else None
        return "mmu-w" if btype is not None and is_mmu_type(str(btype), self.lint) else None

    def mmu_walker_role(self, base: str, scope: Scope, offset: int, depth: int) -> str | None:
        """The walker role of the MMU `base` designates, when layout.toml fixes it."""
        m = _ARCH_MEMBER.fullmatch(base)
        if m:
            member = self.rules.vcpu_old.get(m.group(1))
            return member.walker if member is not None and member.kind != "mmu_pointer" else None
        if re.fullmatch(r"\w+", base) and depth < 3:
            assigned = [(at, v) for at, target, v in scope.assignments() if target == base and at < offset]
            if assigned:
                return self.mmu_walker_role(bare_expr(assigned[-1][1]), scope, offset, depth + 1)
        return None

    def address_kind(self, node: Node, scope: Scope) -> str | None:
        ctype = scope.type_of(node)
        s = self.settings
        if ctype is not None:
            if ctype.depth == 0 and ctype.name in s.gva_address_types:
                return "gva"
            if ctype.depth == 0 and ctype.name in s.ngpa_address_types:
                return "ngpa"
            return None
        if node.type not in ("identifier", "field_expression"):
            return None
        word = text(node).rsplit(".", 1)[-1].rsplit(">", 1)[-1].lower()
        if any(w in word for w in s.gva_address_words):
            return "gva"
        if any(w in word for w in s.ngpa_address_words):
            return "ngpa"
        return None

    # -- KVM010 / KVM011
    def translations(self, rules: list[LintRule]) -> None:
        s = self.settings
        for rel in self.files():
            for node, pf, frag in self.nodes(rel, {s.translate_field}):
                fexpr = node.parent
                call = fexpr.parent if fexpr is not None else None
                if (fexpr is None or fexpr.type != "field_expression" or call is None
                        or call.type != "call_expression" or call.child_by_field_name("function") != fexpr):
                    continue
                args = [a for a in call.child_by_field_name("arguments").named_children if a.type != "comment"]
                if len(args) <= max(s.translate_walker_arg, s.translate_address_arg):
                    continue
                scope = self.scope(node, pf, frag)
                kind = self.address_kind(args[s.translate_address_arg], scope)
                if kind is None:
                    continue
                src_of = lambda n: pf.text(n, frag)  # noqa: E731
                arg = src_of(args[s.translate_address_arg])
                reported: set[str] = set()
                for target in (fexpr.child_by_field_name("argument"), args[s.translate_walker_arg]):
                    role, origin = self.role_origin(src_of(target), scope, target.start_byte)
                    if role is None:
                        # Code from before the move (the call on the MMU, as a patch's removed lines
                        # have it): `mmu->gva_to_gpa(vcpu, mmu, ...)` walks what `mmu->w` walks after
                        # it, so a patch that only moves the call to the walker carries its walker over.
                        role = self.mmu_role(bare_expr(src_of(target)), scope, target.start_byte)
                    rule = next((r for r in rules if r.match["address"] == kind and role in r.match["walker"]),
                                None)
                    if rule is None or role in reported:
                        continue  # base and argument are usually the same walker: one finding
                    reported.add(role)
                    # carried.py's key: the same address through the same walker, an MMU's walker
                    # named by its MMU (`mmu` before the move, `mmu->w` after it).
                    walker = bare_expr(src_of(target))
                    m = _MMU_W.fullmatch(walker)
                    walker = bare_expr(m.group(1)) if m else walker
                    self.report(rule, pf, frag, target, self.lint.walker_of(rule.fix["walker_of"], self.unit.names),
                                origin, arg=arg, role=_ROLE_TEXT.get(role, role),
                                symbol=f"{squash(arg)}@{squash(walker)}")

    # -- KVM012
    def nested_faults(self, rules: list[LintRule]) -> None:
        """X.nested_page_fault = A op B, and `X.nested_page_fault ? A : B`.

        Judged by what the test computes, not how it is spelt: there are two
        walkers, and a fault is nested exactly when the walk was the nGPA
        walker's (not the GVA walker's).  With one side a walker variable W and
        the other a walker of known role, `W != {gva}` and `W == {ngpa}` are the
        same test and both right; `W == {gva}` and `W != {ngpa}` are inverted; a
        side that is an MMU's walker (mmu->w) is {ngpa} only while L2 runs with
        nested TDP, so no comparison with it is right.
        """
        for rel in self.files():
            for node, pf, frag in self.nodes(rel, {self.settings.nested_fault_field}):
                fexpr = node.parent
                parent = fexpr.parent if fexpr is not None else None
                if parent is not None and parent.type == "conditional_expression" \
                        and parent.child_by_field_name("condition") == fexpr:
                    self._nested_choice(rules, parent, node, pf, frag)
                    continue
                if parent is None or parent.type != "assignment_expression" \
                        or parent.child_by_field_name("left") != fexpr:
                    continue
                value = parent.child_by_field_name("right")
                while value is not None and value.type == "parenthesized_expression" and value.named_children:
                    value = value.named_children[0]
                if value is None or value.type != "binary_expression" \
                        or text(value.child_by_field_name("operator")) not in ("==", "!="):
                    continue
                op = text(value.child_by_field_name("operator"))
                scope = self.scope(node, pf, frag)
                sides = [value.child_by_field_name("left"), value.child_by_field_name("right")]
                roles = [self.role(pf.text(n, frag), scope, n.start_byte) for n in sides]
                for side, role, other, other_role in zip(sides, roles, reversed(sides), reversed(roles)):
                    if role is None or other_role in ("gva", "ngpa") and role in ("gva", "ngpa"):
                        continue  # two fixed walkers compared: a constant, not this rule's business
                    if (op, role) in (("!=", "gva"), ("==", "ngpa")):
                        break  # the right test, in either spelling
                    rule = next((r for r in rules if role in r.match["walker"]), None)
                    if rule is not None:
                        fix = self.lint.expr_new(rule.fix["expr"], self.unit.names)
                        left = pf.text(other, frag).strip()
                        if re.fullmatch(r"\w+", left):  # the template's walker variable is `w`
                            fix = re.sub(r"^w\b", left, fix)
                        self.report(rule, pf, frag, side, fix, role=_ROLE_TEXT.get(role, role))
                    break

    def _nested_choice(self, rules: list[LintRule], cond: Node, node: Node, pf: ParsedFile, frag) -> None:
        """`nested_page_fault ? A : B` picks a walker: A must be {ngpa}'s, B {gva}'s."""
        scope = self.scope(node, pf, frag)
        branches = [cond.child_by_field_name("consequence"), cond.child_by_field_name("alternative")]
        if None in branches:
            return
        roles = [self.role(pf.text(n, frag), scope, n.start_byte) for n in branches]
        if None in roles or roles == ["ngpa", "gva"]:
            return
        side = branches[0] if roles[0] != "ngpa" else branches[1]
        role = roles[0] if roles[0] != "ngpa" else roles[1]
        rule = next((r for r in rules if role in r.match["walker"]), None)
        if rule is not None:
            n = self.unit.names
            fix = (f"{pf.text(cond.child_by_field_name('condition'), frag)} ? &vcpu->arch.{n.ngpa} : "
                   f"&vcpu->arch.{n.gva}")
            self.report(rule, pf, frag, side, fix, role=_ROLE_TEXT.get(role, role))

    # -- KVM013: a walker of the other stage, in a function that works with one walker
    def enclosing_function(self, rel: str, line: int) -> str | None:
        """The function a line is in, from the text (kernel style), else the hunk's heading."""
        if rel not in self._lines:
            self._lines[rel] = (self.unit.source(rel) or b"").split(b"\n")
        lines = self._lines[rel]
        first, section = 1, None
        for lo, hi, name in self.unit.sections.get(rel, ()):
            if lo <= line <= hi:
                first, section = lo, name
                break
        for n in range(line - 1, first - 1, -1):
            t = lines[n - 1].decode("utf-8", "replace") if n - 1 < len(lines) else ""
            if t.startswith("}"):
                return None
            m = _FN_HEAD.match(t)
            if m and not t.rstrip().endswith(";"):
                return m.group(1)
        return section

    def stage(self, function: str | None) -> str | None:
        """The walker a function works with: by name (lint.toml), else by what the tree's body uses."""
        if function is None:
            return None
        if any(fnmatch.fnmatchcase(function, p) for p in self.settings.ngpa_stage_functions):
            return "ngpa"
        roles = self.unit.function_walkers.get(function)
        return next(iter(roles)) if roles is not None and len(roles) == 1 else None

    def stage_walkers(self, rules: list[LintRule]) -> None:
        by_name = {self.unit.names.gva: "gva", self.unit.names.ngpa: "ngpa"}
        taken = {(f.file, f.line) for f in self.out}
        # Where KVM010/KVM011 report a translation, they say it better.
        translated = {(f.file, f.function) for f in self.out if f.rule in {r.id for r in self.lint.with_pattern("translation")}}
        # With --tree: helpers whose body walks with one walker and that take none as a parameter
        # (kvm_mmu_gva_to_gpa_read() and the like): calling one names that walker too.
        walker_type = f"struct {self.rules.types['walker']}"
        bad = {role for r in rules for role in r.match["walker"]}
        by_name = {name: role for name, role in by_name.items() if role in bad}
        helpers = {fn: next(iter(roles)) for fn, roles in self.unit.function_walkers.items()
                   if len(roles) == 1 and next(iter(roles)) in bad and re.fullmatch(r"\w+", fn)
                   and not any(t.name == walker_type for _, t in getattr(self.unit.program.functions.get(fn),
                                                                         "params", [(None, None)]) if t)}
        for rel in self.files():
            src = self.unit.source(rel)
            wanted = [n for n in (*by_name, *helpers) if n.encode() in (src or b"")]
            if not wanted:
                continue
            for tok in tokens(src, set(wanted)):
                if tok.context != "code":
                    continue
                line = src.count(b"\n", 0, tok.start) + 1
                if not self.unit.wanted(rel, line) or (rel, line) in taken:
                    continue
                if tok.name in helpers:
                    role = helpers[tok.name]
                    if not re.match(rb"\s*\(", src[tok.end:tok.end + 8]):
                        continue  # not a call
                    prefix = ""
                else:
                    role = by_name[tok.name]
                    head = src[max(0, tok.start - 60):tok.start].decode("utf-8", "replace")
                    m = re.search(r"(&\s*)?\(?\w+\s*(->|\.)\s*arch\s*\.\s*$", head)
                    if m is None:
                        continue  # not a vcpu's walker (a member declaration, another struct's field)
                    prefix = m.group(0)
                fn = self.enclosing_function(rel, line)
                if (rel, fn) in translated:
                    continue
                stage = self.stage(fn)
                rule = next((r for r in rules if stage == r.match["stage"] and role in r.match["walker"]), None)
                if rule is None:
                    continue
                start = tok.start - len(prefix.encode())
                expr = " ".join((prefix + tok.name).split()) + ("()" if tok.name in helpers else "")
                col = start - (src.rfind(b"\n", 0, start) + 1) + 1
                fix = self.lint.walker_of(rule.fix["walker_of"], self.unit.names)
                if tok.name in helpers:
                    fix = None  # no drop-in replacement: translate with the walker itself
                elif not expr.startswith("&"):
                    fix = fix.lstrip("&")
                self.out.append(make_finding(rule, self.unit, rel, line, col, expr, fn, fix,
                                             {"role": _ROLE_TEXT.get(role, role), "callee": fn or "?",
                                              "stage": _ROLE_TEXT.get(stage, stage)}))
                taken.add((rel, line))

    # -- KVM020
    def narrowed_calls(self, rules: list[LintRule]) -> None:
        walker = f"struct {self.rules.types['walker']}"
        # The new layout's known signatures (lint.toml), unless the tree or patch says otherwise.
        narrowed: dict[str, list[int]] = {}
        if self.unit.layout != "old":
            narrowed = {name: list(idx) for name, idx in self.settings.walker_parameters.items()}
        for name, sig in self.unit.program.functions.items():
            idx = [i for i, (_, t) in enumerate(sig.params) if t.name == walker and t.depth == 1]
            if idx:
                narrowed[name] = idx
            elif any(t.name.startswith("struct ") for _, t in sig.params):
                # A real signature without a walker parameter.  (A call statement in a hunk
                # read without its function can parse as a prototype of untyped names.)
                narrowed.pop(name, None)
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
        t = bare_expr(pf.text(arg, frag))
        m = _ARCH_MEMBER.fullmatch(t)
        if m and m.group(1) in self.rules.vcpu_old and not self.rules.vcpu_old[m.group(1)].removed:
            kind = self.rules.vcpu_old[m.group(1)].kind
            # vcpu->arch.mmu is a pointer; root_mmu/guest_mmu are objects whose address is taken.
            return (kind == "mmu_pointer") == (not t.startswith("&"))
        return not self.unit.typed and t in self.settings.mmu_pointer_names


_ROLE_TEXT = {"ngpa": "the nGPA walker", "gva": "the GVA walker",
              "mmu-w": "an MMU's walker, the nGPA walker while L2 runs with nested TDP"}


# The handlers rules/lint.toml's match.pattern names (checked when the rules load).
@handler("translation")
def _translation(shapes: Shapes, rules: list[LintRule]) -> None:
    shapes.translations(rules)


@handler("nested-fault")
def _nested_fault(shapes: Shapes, rules: list[LintRule]) -> None:
    shapes.nested_faults(rules)


@handler("stage-walker")
def _stage_walker(shapes: Shapes, rules: list[LintRule]) -> None:
    shapes.stage_walkers(rules)


@handler("narrowed-call")
def _narrowed_call(shapes: Shapes, rules: list[LintRule]) -> None:
    shapes.narrowed_calls(rules)

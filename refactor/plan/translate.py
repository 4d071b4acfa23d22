"""Plan the edits of one function: old expressions to new ones, by type.

Each expression is rebuilt bottom-up.  Its value is classified (a walker,
an MMU, something else) and converted where its consumer needs the other:
a walker field read through an MMU goes through `->w`, an old name that
designated a walker becomes the named walker, a walker handed to code that
still needs a struct kvm_mmu takes the MMU the rules give for it.  Every
conversion is looked up in rules/ (layout.toml, mappings.toml); this module
only knows C.  Only the smallest changed expressions become edits, so the
rest of a line (and its comments) is left as it was.
"""
from __future__ import annotations

import bisect
import re

from tree_sitter import Node

from refactor.plan.edits import DROP, Edit, Human
from refactor.frontend.ctype import text as raw_text
from refactor.index.program import Scope
from refactor.plan.values import Context, Conversions, Val, arch_prefix  # noqa: F401  (Context, Val: re-exported)
from refactor.rules import cite, squash

# Rule ids this module writes itself (rules/mappings.toml defines each, with its why).
NARROW_LOCAL = cite("narrow-local")
NARROW_PARAM = cite("narrow-param")
NARROW_CALL = cite("narrow-call")
RENAME_LOCAL = cite("rename-local")
WALKER_COMPARE = cite("walker-compare")
REWRITE = cite("rewrite")
FIELD = cite("field-{field}")
WALK_MMU_ASSIGN = cite("walk-mmu-assign")
BUILDER_ON_WALKER = cite("walker-builder-field-on-nested-mmu")
FORMAT_TYPE = cite("rsvd-bits-validate-type")
WALK_MMU_IS_NESTED = cite("walk-mmu-is-nested")
NESTED_MMU_COMPARE = cite("nested-mmu-compare")
WALK_MMU_COMPARE = cite("walk-mmu-compare")


def field_rule(name: str) -> str:
    """The id of the change of a struct kvm_mmu field (the "field-{field}" family)."""
    return FIELD.replace("{field}", name)


class FunctionRewriter(Conversions):
    """Rebuild one function (or top-level declaration) bottom-up; record its edits."""

    def __init__(self, ctx: Context, pf, frag, fn_name: str | None, scope: Scope):
        self.ctx = ctx
        self.pf = pf
        self.frag = frag
        self.fn = fn_name
        self.scope = scope
        self.rules = ctx.rules
        self._changed: list = []
        self._hits: list[int] | None = None  # offsets of relevant words in this fragment
        self.vars = {}  # local/param name -> "walker" | "mmu"
        for name, ctype in scope.names.items():
            if ctype.name == f"struct {self.rules.types['mmu']}" and ctype.depth == 1:
                self.vars[name] = "walker" if (fn_name, name) in ctx.narrowed else "mmu"

    # ---- helpers ------------------------------------------------------------
    def src(self, node: Node) -> str:
        return self.pf.text(node, self.frag)

    def line(self, node: Node) -> int:
        return self.pf.src.count(b"\n", 0, node.start_byte + self.frag.offset) + 1

    def edit(self, node: Node, new: str, rules: tuple[str, ...], why: str = "") -> None:
        old = self.src(node)
        if new != old:
            self.ctx.edits.append(Edit(self.pf.rel, node.start_byte + self.frag.offset,
                                       node.end_byte + self.frag.offset, new, rules, why, old,
                                       self.line(node)))

    def human(self, node: Node, why: str) -> None:
        self.ctx.humans.append(Human(self.pf.rel, self.line(node), why, self.src(node)[:120]))

    # ---- the rebuild --------------------------------------------------------
    def relevant(self, node: Node) -> bool:
        """Does the node's text hold a word any rule or narrowed name cares about?"""
        if self._hits is None:
            key = (self.pf.rel, self.frag.start)
            hits = self.ctx.hits.get(key)
            if hits is None:
                chunk = self.pf.src[self.frag.start:self.frag.end]
                hits = [m.start() + self.frag.start for m in self.ctx.relevant_bytes.finditer(chunk)]
                self.ctx.hits[key] = hits
            self._hits = hits
        start = node.start_byte + self.frag.offset
        end = node.end_byte + self.frag.offset
        i = bisect.bisect_left(self._hits, start)
        return i < len(self._hits) and self._hits[i] < end

    def rebuild(self, node: Node) -> Val:
        if not self.relevant(node):
            return self.classify_plain(node)
        handler = getattr(self, "on_" + node.type, None)
        if handler is not None:
            out = handler(node)
            if out is not None:
                if out.text != self.src(node):
                    self._changed.append((node, out))
                return out
        return Val(self.generic(node), old=squash(self.src(node)))

    def generic(self, node: Node) -> str:
        """Original text with rebuilt children spliced in."""
        if not node.children:
            return self.src(node)
        parts = []
        pos = node.start_byte
        for child in node.children:
            parts.append(self.pf.src[pos + self.frag.offset:child.start_byte + self.frag.offset]
                         .decode("utf-8", "replace"))
            parts.append(self.rebuild(child).text)
            pos = child.end_byte
        parts.append(self.pf.src[pos + self.frag.offset:node.end_byte + self.frag.offset]
                     .decode("utf-8", "replace"))
        return "".join(parts)

    def classify_plain(self, node: Node) -> Val:
        t = self.src(node)
        kind = "other"
        if node.type == "identifier" and t in self.vars:
            kind = "mmu_ptr"
        return Val(t, kind, squash(t))

    def top(self, node: Node) -> None:
        """Rebuild a function or declaration; record its outermost changed expressions.

        Edits stay as small as the handlers that changed something (usually a
        statement), so other passes can edit elsewhere in the same function.
        """
        self._changed = []
        self.rebuild(node)
        spans = sorted(self._changed, key=lambda nv: (nv[0].start_byte, -nv[0].end_byte))
        last_end = -1
        for n, v in spans:
            if n.start_byte < last_end:
                continue  # inside an outer changed node, whose text already includes it
            # The edit names every rule that changed something inside it.
            inner = {w.rule for m, w in spans if w.rule and n.start_byte <= m.start_byte
                     and m.end_byte <= n.end_byte}
            self.edit(n, v.text, tuple(sorted(inner)) or (REWRITE,))
            last_end = n.end_byte

    # ---- node handlers --------------------------------------------------------
    def on_identifier(self, node: Node) -> Val:
        name = self.src(node)
        state = self.vars.get(name)
        if state == "walker":
            return Val(self.ctx.renames.get((self.fn, name), name), "walker_ptr", name,
                       rule=NARROW_LOCAL)
        if state == "mmu":
            return Val(name, "mmu_ptr", name)
        renamed = self.ctx.renames.get((self.fn, name))
        if renamed is not None and name in self.scope.names:
            return Val(renamed, old=name, rule=RENAME_LOCAL)
        return Val(name, old=name)

    def on_parenthesized_expression(self, node: Node) -> Val:
        inner = [c for c in node.named_children if c.type != "comment"]
        if len(inner) == 1:
            v = self.rebuild(inner[0])
            return Val(self.generic_with(node, {inner[0].start_byte: v.text}), v.kind, squash(self.src(node)),
                       v.role, v.rule, v.from_member)
        return None

    def generic_with(self, node: Node, replaced: dict[int, str]) -> str:
        parts, pos = [], node.start_byte
        for child in node.children:
            parts.append(self.pf.src[pos + self.frag.offset:child.start_byte + self.frag.offset].decode())
            parts.append(replaced.get(child.start_byte, self.src(child)) if child.start_byte in replaced
                         else self.rebuild(child).text)
            pos = child.end_byte
        parts.append(self.pf.src[pos + self.frag.offset:node.end_byte + self.frag.offset].decode())
        return "".join(parts)

    def on_pointer_expression(self, node: Node) -> Val | None:
        op = raw_text(node.child_by_field_name("operator"))
        arg = node.child_by_field_name("argument")
        v = self.rebuild(arg)
        if op == "&":
            if v.kind == "walker_obj":
                return Val("&" + v.text, "walker_ptr", squash(self.src(node)), rule=v.rule,
                           from_member=v.from_member)
            if v.kind == "mmu_obj":
                # from_member kept: `w != &vcpu->arch.nested_mmu` while nested_mmu still
                # exists is the nested-fault test (nested-mmu-compare), not a walker compare.
                return Val("&" + v.text, "mmu_ptr", squash(self.src(node)), v.role, v.rule,
                           from_member=v.from_member)
        return Val(self.generic_with(node, {arg.start_byte: v.text}), old=squash(self.src(node)))

    def on_field_expression(self, node: Node) -> Val | None:
        base = node.child_by_field_name("argument")
        fld = raw_text(node.child_by_field_name("field"))
        op = raw_text(node.child_by_field_name("operator"))
        old = squash(self.src(node))
        btype = self.scope.type_of(base)
        obj = btype.deref() if (btype is not None and op == "->") else btype
        struct = obj.struct if obj is not None else None
        if struct == self.rules.types["vcpu_arch"] or (struct is None and squash(self.src(base)).endswith("arch")):
            return self.vcpu_member(node, base, fld, op, old)
        if struct == self.rules.types["mmu"] and fld in self.rules.mmu_fields:
            return self.mmu_field(node, base, fld, op, old)
        bv = self.rebuild(base)
        if bv.kind == "builder_on_walker":  # x.root_role.invalid on the walk-only MMU
            return Val(self.src(node), "builder_on_walker", old, rule=bv.rule)
        return Val(self.generic_with(node, {base.start_byte: bv.text}), old=old, rule=bv.rule)

    def vcpu_member(self, node, base, fld, op, old) -> Val | None:
        info = self.rules.vcpu_old.get(fld)
        if info is None:
            return None
        arch = self.rebuild(base).text
        here = f"{arch}{op}{fld}"
        if info.kind in ("walker_pointer", "walk_only_mmu") and not info.removed:
            # Still there (an intermediate step): a kvm_mmu whose walker the base rules name.
            kind = "mmu_ptr" if info.kind == "walker_pointer" else "mmu_obj"
            return Val(here, kind, old, info.walker, from_member=fld)
        if info.kind in ("walker_pointer", "walk_only_mmu"):
            # Removed: the member is now the walker the base rule names (walk_mmu, a
            # pointer, stands for the walker's address; nested_mmu for the walker).
            b = self.rules.base_for(f"vcpu->arch.{fld}")
            kind = "walker_obj" if b.new_is == "obj" else "walker_ptr"
            return Val(self.fill(b.new, arch), kind, old, rule=b.id, from_member=fld)
        if info.kind == "mmu":
            return Val(here, "mmu_obj", old, info.walker, from_member=fld)
        return Val(here, "mmu_ptr", old, from_member=fld)

    def mmu_field(self, node, base, fld, op, old) -> Val | None:
        f = self.rules.mmu_fields[fld]
        v = self.rebuild(base)
        if f.dest == "walker":
            return Val(self.walker_access(v, base, f.path), old=old, rule=field_rule(fld))
        if v.kind in ("walker_obj", "walker_ptr"):
            # A builder field of the walk-only MMU: the statement goes (rules).
            return Val(self.src(node), "builder_on_walker", old, rule=BUILDER_ON_WALKER)
        sep = "." if v.kind == "mmu_obj" or op == "." else "->"
        if f.path != fld or v.text != self.src(base):
            return Val(f"{v.text}{sep}{f.path}", old=old, rule=field_rule(fld))
        return Val(self.src(node), old=old)

    def on_call_expression(self, node: Node) -> Val | None:
        fnode = node.child_by_field_name("function")
        args_node = node.child_by_field_name("arguments")
        args = [c for c in args_node.named_children if c.type != "comment"]
        called = " ".join(self.src(fnode).split())
        walker_idx: set[int] = set()
        mmu_idx: set[int] = set()
        new_callee = None
        target = self.ctx.callee(called)
        if target is not None:
            walker_idx = self.ctx.walker_params.get(target, set())
            mmu_idx = self.ctx.mmu_param_funcs.get(target, set())
        else:  # a function the tree declares only: its prototype says what it takes
            mmu_idx = self.ctx.mmu_param_funcs.get(called, set())
        if fnode.type == "field_expression":
            walker_idx = self.ctx.fnptr_walker.get(raw_text(fnode.child_by_field_name("field")), set())
        for rule in self.rules.calls:
            if rule.function == called:
                vals = self.rebuild(args[rule.arg])
                if vals.kind in ("walker_ptr", "walker_obj"):
                    new_callee = rule.new
                    walker_idx = {rule.arg}
        replaced = {}
        fv = self.rebuild(fnode)
        replaced[fnode.start_byte] = new_callee or fv.text
        for i, a in enumerate(args):
            v = self.rebuild(a)
            if i in walker_idx or (target is None and self.ctx.walker_macros(called, i)
                                   and v.kind.startswith("mmu")):
                replaced[a.start_byte] = self.as_walker(v, a) if v.kind != "other" else v.text
            elif v.kind in ("walker_obj", "walker_ptr") and (i in mmu_idx or target is not None):
                why = getattr(self.ctx, "blocked_walker", {}).get((target, i))
                info = self.rules.vcpu_old.get(v.from_member or "")
                if why is not None and info is not None and info.kind == "walk_only_mmu":
                    # The callee walks this MMU: the builder named for it would walk other tables.
                    self.human(a, f"{target}() walks its argument {i} but cannot take a walker "
                                  f"({why}); passing the MMU the rules name for {v.from_member} "
                                  "would walk other tables")
                    replaced[a.start_byte] = self.src(a)  # left as it was, for the human
                    self._changed = [(n, w) for n, w in self._changed
                                     if not (a.start_byte <= n.start_byte and n.end_byte <= a.end_byte)]
                    continue
                replaced[a.start_byte] = self.as_mmu(v, a)
            elif v.kind in ("walker_obj", "walker_ptr") and target is None and fnode.type == "identifier" \
                    and called not in getattr(self.ctx, "macro_names", ()) \
                    and squash(v.text) != squash(self.src(a)):
                # Neither defined nor declared here: whether it takes a walker is unknown.
                self.human(a, f"{called}() is neither defined nor declared in the tree: whether its "
                              f"argument {i} takes a walker or a struct kvm_mmu is unknown")
                replaced[a.start_byte] = self.src(a)  # left as it was, for the human
                self._changed = [(n, w) for n, w in self._changed
                                 if not (a.start_byte <= n.start_byte and n.end_byte <= a.end_byte)]
            else:
                replaced[a.start_byte] = v.text
        args_text = self._splice(args_node, replaced)
        text = replaced[fnode.start_byte] + self.between(fnode, args_node) + args_text
        return Val(text, old=squash(self.src(node)), rule=NARROW_CALL if walker_idx else None)

    def _splice(self, node: Node, replaced: dict[int, str]) -> str:
        parts, pos = [], node.start_byte
        for child in node.children:
            parts.append(self.pf.src[pos + self.frag.offset:child.start_byte + self.frag.offset].decode())
            parts.append(replaced[child.start_byte] if child.start_byte in replaced else self.rebuild(child).text)
            pos = child.end_byte
        parts.append(self.pf.src[pos + self.frag.offset:node.end_byte + self.frag.offset].decode())
        return "".join(parts)

    def between(self, a: Node, b: Node) -> str:
        return self.pf.src[a.end_byte + self.frag.offset:b.start_byte + self.frag.offset].decode()

    def on_binary_expression(self, node: Node) -> Val | None:
        op = raw_text(node.child_by_field_name("operator"))
        if op not in ("==", "!="):
            return None
        left, right = node.child_by_field_name("left"), node.child_by_field_name("right")
        lv, rv = self.rebuild(left), self.rebuild(right)
        old = squash(self.src(node))
        members = {lv.from_member, rv.from_member}
        pointer, walk_only = self.rules.member_of_kind("walker_pointer"), self.rules.member_of_kind("walk_only_mmu")
        if {pointer, walk_only} <= members and self.rules.vcpu_old[pointer].removed:
            rule = self.rules.expr(WALK_MMU_IS_NESTED)
            new = self.fill(rule.new, arch_prefix(lv.text if lv.from_member else rv.text))
            if op == "!=":
                new = f"!({new})"
            return Val(self._wrap(node, new), old=old, rule=rule.id)
        walkers = [v.kind in ("walker_obj", "walker_ptr") for v in (lv, rv)]
        if any(walkers):
            compare = self.rules.expr(WALK_MMU_COMPARE)
            if old == squash(compare.old):
                # The nested-fault test is written by its own entry, as the model reads it
                # (emulator/derive.py): a wrong entry changes the C and the model alike.
                var, var_node = (lv, left) if rv.from_member else (rv, right)
                new = re.sub(r"\bw\b", lambda _: self.as_walker(var, var_node), self.fill(compare.new), count=1)
                return Val(self._wrap(node, new), old=old, rule=compare.id)
            nested = rv if rv.from_member == walk_only else lv if lv.from_member == walk_only else None
            other = (lv if nested is rv else rv) if nested is not None else None
            if nested is not None and other.from_member is None:
                rule = self.rules.expr(NESTED_MMU_COMPARE)
                w = self.as_walker(other, left if other is lv else right)
                new = self.fill(rule.new).replace("w ==", f"{w} ==")
                if op == "==":
                    new = f"!({new})"
                return Val(self._wrap(node, new), old=old, rule=rule.id)
            l_txt = self.as_walker(lv, left) if lv.kind != "other" else lv.text
            r_txt = self.as_walker(rv, right) if rv.kind != "other" else rv.text
            if l_txt == r_txt:
                self.human(node, "both sides now name the same walker; the test needs restating")
            return Val(l_txt + self.between(left, node.child_by_field_name("operator"))
                       + op + self.between(node.child_by_field_name("operator"), right) + r_txt, old=old,
                       rule=WALKER_COMPARE)
        return Val(self.generic_with(node, {left.start_byte: lv.text, right.start_byte: rv.text}), old=old)

    def _wrap(self, node: Node, new: str) -> str:
        """Parenthesise a replacement that is looser than the comparison it replaces."""
        parent = node.parent
        loose = "||" in new or "&&" in new
        if loose and parent is not None and parent.type not in (
                "parenthesized_expression", "condition_clause", "expression_statement", "return_statement",
                "init_declarator", "argument_list") and not (
                parent.type == "binary_expression" and raw_text(parent.child_by_field_name("operator")) == "||"
                and "&&" not in new):
            return f"({new})"
        return new

    def on_conditional_expression(self, node: Node) -> Val | None:
        cons, alt = node.child_by_field_name("consequence"), node.child_by_field_name("alternative")
        cv, av = self.rebuild(cons), self.rebuild(alt)
        kinds = {cv.kind, av.kind}
        if kinds & {"walker_obj", "walker_ptr"} and kinds & {"mmu_ptr", "mmu_obj"}:
            need_walker = self._wants_walker(node)
            conv = self.as_walker if need_walker else self.as_mmu
            rep = {cons.start_byte: conv(cv, cons), alt.start_byte: conv(av, alt)}
            kind = "walker_ptr" if need_walker else "mmu_ptr"
            return Val(self.generic_with(node, rep), kind, squash(self.src(node)))
        return None

    def _wants_walker(self, node: Node) -> bool:
        """Does the consumer of an expression (an assignment target) hold a walker?"""
        parent = node.parent
        while parent is not None and parent.type == "parenthesized_expression":
            parent = parent.parent
        if parent is not None and parent.type == "assignment_expression":
            left = parent.child_by_field_name("left")
            return left.type == "identifier" and self.vars.get(self.src(left)) == "walker"
        if parent is not None and parent.type == "init_declarator":
            d = parent.child_by_field_name("declarator")
            while d is not None and d.type == "pointer_declarator":
                d = d.child_by_field_name("declarator")
            return d is not None and self.vars.get(self.src(d)) == "walker"
        return False

    def on_assignment_expression(self, node: Node) -> Val | None:
        left, right = node.child_by_field_name("left"), node.child_by_field_name("right")
        lv = self.rebuild(left)
        rv = self.rebuild(right)
        old = squash(self.src(node))
        if lv.from_member and self.rules.vcpu_old[lv.from_member].removed and \
                self.rules.vcpu_old[lv.from_member].kind == "walker_pointer":
            return self._by_rule(WALK_MMU_ASSIGN, old)
        if lv.kind == "builder_on_walker":
            return self._by_rule(BUILDER_ON_WALKER, old)
        if lv.kind == "walker_ptr" and rv.kind != "other":
            r_txt = self.as_walker(rv, right)
        elif lv.kind == "mmu_ptr" and rv.kind in ("walker_obj", "walker_ptr"):
            r_txt = self.as_mmu(rv, right)
        else:
            r_txt = rv.text
        return Val(lv.text + self.between(left, right) + r_txt, old=old, rule=lv.rule or rv.rule)

    def _by_rule(self, rule_id: str, old: str) -> Val:
        """A statement an [[exprs]] entry rewrites whole; an empty `new` drops it (as the model reads it)."""
        new = self.fill(self.rules.expr(rule_id).new).strip().rstrip(";")
        return Val(new, old=old, rule=rule_id) if new else Val("", "drop", old, rule=rule_id)

    def on_expression_statement(self, node: Node) -> Val | None:
        inner = [c for c in node.named_children if c.type != "comment"]
        if len(inner) == 1:
            v = self.rebuild(inner[0])
            if v.kind == "drop":
                if node.parent is None or node.parent.type != "compound_statement":
                    self.human(node, "a statement to drop is the whole body of a condition or loop")
                    return Val(";", rule=v.rule)
                return Val(DROP, "drop", rule=v.rule)
            return Val(self.generic_with(node, {inner[0].start_byte: v.text}), rule=v.rule)
        return None

    def on_declaration(self, node: Node) -> Val | None:
        decls = node.children_by_field_name("declarator")
        tnode = node.child_by_field_name("type")
        walker_decl = False
        rep = {}
        for d in decls:
            inner = d
            while inner is not None and inner.type in ("init_declarator", "pointer_declarator"):
                inner = inner.child_by_field_name("declarator")
            name = self.src(inner) if inner is not None else ""
            if self.vars.get(name) == "walker":
                walker_decl = True
                rep[d.start_byte] = self._walker_declarator(d, name)
            elif (self.fn, name) in self.ctx.renames:
                rep[d.start_byte] = re.sub(rf"\b{re.escape(name)}\b", self.ctx.renames[(self.fn, name)],
                                           self.generic(d), count=1)
            elif self.vars.get(name) == "mmu" and d.type == "init_declarator":
                value = d.child_by_field_name("value")
                v = self.rebuild(value)
                conv = self.as_mmu(v, value) if v.kind.startswith("walker") else v.text
                rep[d.start_byte] = self.src(d)[:value.start_byte - d.start_byte] + conv
        if walker_decl:
            if len(decls) > 1:
                self.human(node, "a walker and another variable share one declaration")
            rep[tnode.start_byte] = f"struct {self.rules.types['walker']}"
        if not rep:
            return None
        return Val(self.generic_with(node, rep), rule=NARROW_LOCAL if walker_decl else None)

    def _walker_declarator(self, d: Node, name: str) -> str:
        new_name = self.ctx.renames.get((self.fn, name), name)
        text = self.src(d)
        if d.type == "init_declarator":
            value = d.child_by_field_name("value")
            v = self.rebuild(value)
            head = self.src(d)[:value.start_byte - d.start_byte]
            text = head + (self.as_walker(v, value) if v.kind != "other" else v.text)
        return re.sub(rf"\b{re.escape(name)}\b", new_name, text, count=1)

    def on_parameter_declaration(self, node: Node) -> Val | None:
        decl = node.child_by_field_name("declarator")
        inner = decl
        while inner is not None and inner.type == "pointer_declarator":
            inner = inner.child_by_field_name("declarator")
        name = self.src(inner) if inner is not None else ""
        if self.vars.get(name) != "walker":
            if (self.fn, name) in self.ctx.renames:
                return Val(re.sub(rf"\b{re.escape(name)}\b", self.ctx.renames[(self.fn, name)],
                                  self.generic(node), count=1), rule=RENAME_LOCAL)
            return None
        tnode = node.child_by_field_name("type")
        new_name = self.ctx.renames.get((self.fn, name), name)
        rep = {tnode.start_byte: f"struct {self.rules.types['walker']}",
               decl.start_byte: re.sub(rf"\b{re.escape(name)}\b", new_name, self.src(decl), count=1)}
        return Val(self.generic_with(node, rep), rule=NARROW_PARAM)

    def on_type_identifier(self, node: Node) -> Val | None:
        if self.src(node) == self.rules.types["old_format"]:
            return Val(self.rules.types["format"], rule=FORMAT_TYPE)
        return None

"""Maintainer-style locals (rules/restructure.toml [[locals]]), on the rewritten code.

After the rewrite a function may reach one walker through the same chain
several times (`mmu->w->cpu_role...` four times).  A maintainer writes one
local instead: `struct kvm_pagewalk *w = mmu->w;`, or, where the MMU is known
to be one of the vCPU's (`context = &vcpu->arch.guest_mmu`), the walker itself
under its own name (`ngpa_walk = &vcpu->arch.ngpa_walk`).  A local that holds
a named walker (`w = &vcpu->arch.gva_walk`) takes the walker's name, and the
function's other reaches of that walker go through it.

Never where it changes meaning: the chain's base must not be assigned in the
function (nor declared without a value), and the name must be free.  Never
where the local could go unused: at least one use must be outside every
`#if`/`#ifdef` of the function, since a header like paging_tmpl.h is compiled
once per configuration of its conditionals and -Wunused-variable (an error in
KVM's -Werror build) fires in each where no use is left.  The declaration goes
with the other declarations at the top of the function: right after the
base's own declaration when the base is a local, first otherwise.
"""
from __future__ import annotations

import re

from tree_sitter import Node

from refactor.frontend.ctype import text, walk_nodes as _walk
from refactor.frontend.parse import parse
from refactor.index.functions import top_level
from refactor.plan.edits import Edit
from refactor.rules import Rules, WalkerNames, squash as _squash


def _identifiers(body: Node) -> set[str]:
    return {text(n) for n in _walk(body) if n.type == "identifier"}


def _assigned(body: Node) -> set[str]:
    """Squashed left sides of every assignment and ++/-- in the body."""
    out = set()
    for n in _walk(body):
        if n.type == "assignment_expression":
            out.add(_squash(text(n.child_by_field_name("left"))))
        elif n.type == "update_expression":
            out.add(_squash(text(n.child_by_field_name("argument"))))
        elif n.type == "pointer_expression" and text(n).startswith("&"):
            out.add(_squash(text(n.child_by_field_name("argument"))) + "&")
    return out


def _written(node: Node) -> bool:
    """Is the member access (or an element or member of it) the target of an assignment?"""
    while node.parent is not None and node.parent.type in ("field_expression", "subscript_expression") \
            and node.parent.children[0] == node:
        node = node.parent
    parent = node.parent
    return parent is not None and parent.type == "assignment_expression" \
        and parent.child_by_field_name("left") == node


def _prefixes(chain: str) -> list[str]:
    """`vcpu->arch.mmu` -> [vcpu, vcpu->arch, vcpu->arch.mmu]."""
    parts = re.split(r"(->|\.)", chain)
    return ["".join(parts[:i + 1]) for i in range(0, len(parts), 2)]


_CONDITIONALS = ("preproc_if", "preproc_ifdef", "preproc_elif", "preproc_elifdef", "preproc_else")


def _conditional(node: Node, top: Node) -> bool:
    """Is node compiled only under a preprocessor conditional below `top`?"""
    node = node.parent
    while node is not None and node != top:
        if node.type in _CONDITIONALS:
            return True
        node = node.parent
    return False


def _beside(uses: list[Node], base: str, member: str) -> bool:
    """Some use sits in a condition or statement that also reads another member of `base`."""
    stops = ("expression_statement", "declaration", "return_statement", "parenthesized_expression")
    for u in uses:
        top = u
        while top.parent is not None and top.type not in stops:
            top = top.parent
        if any(n.type == "field_expression" and n is not u
               and _squash(text(n.child_by_field_name("argument"))) == base
               and text(n.child_by_field_name("field")) != member for n in _walk(top)):
            return True
    return False


def _pointer_written(node: Node) -> bool:
    """Is the member access itself written or its address taken (not a member of what it points to)?"""
    parent = node.parent
    if parent is None:
        return False
    if parent.type == "assignment_expression":
        return parent.child_by_field_name("left") == node
    return parent.type == "update_expression" or (parent.type == "pointer_expression"
                                                  and text(parent).startswith("&"))


def _uses_left(body: Node, name: str, decl: Node, replaced: list[Node]) -> int:
    """Uses of `name` in the body outside its declaration and the nodes about to be replaced."""
    spans = [(n.start_byte, n.end_byte) for n in replaced] + [(decl.start_byte, decl.end_byte)]
    return sum(1 for n in _walk(body) if n.type == "identifier" and text(n) == name
               and not any(a <= n.start_byte < b for a, b in spans))


def _top_decls(body: Node) -> list[Node]:
    out = []
    for c in body.named_children:
        if c.type == "comment":
            continue
        if c.type != "declaration":
            break
        out.append(c)
    return out


def _declared_names(decl: Node) -> list[tuple[str, Node]]:
    out = []
    for d in decl.children_by_field_name("declarator"):
        value = d.child_by_field_name("value") if d.type == "init_declarator" else None
        inner = d.child_by_field_name("declarator") if d.type == "init_declarator" else d
        m = re.search(r"(\w+)\s*(\[.*)?$", text(inner))
        if m:
            out.append((m.group(1), value))
    return out


class _FunctionLocals:
    def __init__(self, rel: str, data: bytes, fn: Node, rules: Rules, names: WalkerNames):
        self.rel, self.data, self.fn, self.rules, self.names = rel, data, fn, rules, names
        self.body = fn.child_by_field_name("body")
        self.walker_t = f"struct {rules.types['walker']}"
        self.edits: list[Edit] = []
        self.taken = _identifiers(fn)
        self.assigned = _assigned(self.body)
        self.locals: dict[str, tuple[Node, Node | None, str]] = {}  # name -> (decl, value, type)
        for decl in _top_decls(self.body):
            for name, value in _declared_names(decl):
                self.locals[name] = (decl, value, text(decl.child_by_field_name("type")))
        self.params: dict[str, str] = {}
        fdecl = fn.child_by_field_name("declarator")
        while fdecl is not None and fdecl.type != "function_declarator":
            fdecl = fdecl.child_by_field_name("declarator")
        if fdecl is not None:
            for p in fdecl.child_by_field_name("parameters").named_children:
                if p.type == "parameter_declaration":
                    m = re.search(r"(\w+)\s*$", text(p))
                    if m:
                        self.params[m.group(1)] = text(p)

    def add(self, start: int, end: int, new: str, rule) -> None:
        self.edits.append(Edit(self.rel, start, end, new, rule["id"], rule["why"],
                               self.data[start:end].decode("utf-8", "replace"),
                               self.data.count(b"\n", 0, start) + 1))

    def stable(self, chain: str) -> bool:
        """The chain's value cannot change in the function (its base has a fixed value)."""
        for p in _prefixes(chain):
            if p in self.assigned or p + "&" in self.assigned:
                return False
        root = _prefixes(chain)[0]
        if root in self.locals:
            return self.locals[root][1] is not None
        return root in self.params

    def declare(self, root: str, line: str, rule) -> None:
        """Declare with the top declarations: after the base's own, else first."""
        anchor = self.locals.get(root, (None,))[0]
        if anchor is not None:
            pos = self.data.find(b"\n", anchor.end_byte) + 1
            indent = re.match(rb"[ \t]*", self.data[self.data.rfind(b"\n", 0, anchor.start_byte) + 1:]).group()
        else:
            first = next((c for c in self.body.named_children if c.type != "comment"), None)
            if first is None:
                return
            pos = self.data.rfind(b"\n", 0, first.start_byte) + 1
            if first.type.startswith("preproc_"):
                # `#if` starts in column 0: indent one level in from the body's brace.
                brace = self.data.rfind(b"\n", 0, self.body.start_byte) + 1
                indent = re.match(rb"[ \t]*", self.data[brace:]).group() + b"\t"
            else:
                indent = re.match(rb"[ \t]*", self.data[pos:]).group()
            if first.type != "declaration":
                line += "\n"  # a blank line between declarations and code
        self.add(pos, pos, indent.decode() + line + "\n", rule)

    def named_mmu_walker(self, base: str) -> str | None:
        """The walker name when `base` is a local set once to a vCPU MMU whose walker is named."""
        info = self.locals.get(base)
        if info is None or info[1] is None:
            return None
        m = re.fullmatch(r"&(\w+(?:->|\.)arch)\.(\w+)", _squash(text(info[1])))
        member = self.rules.vcpu_old.get(m.group(2)) if m else None
        if member is None or member.kind != "mmu" or member.walker is None:
            return None
        return f"{getattr(self.names, member.walker)}|&{m.group(1)}.{getattr(self.names, member.walker)}"

    # ---- rules ---------------------------------------------------------------
    def hoist(self, rule) -> None:
        """`B->member` reached repeatedly -> one local (rules: member, name, min_uses...)."""
        member = rule["member"]
        groups: dict[str, list[Node]] = {}
        for n in _walk(self.body):
            if n.type != "field_expression" or text(n.child_by_field_name("field")) != member \
                    or text(n.child_by_field_name("operator") or n.children[1]) != "->":
                continue
            parent = n.parent
            if parent is not None and parent.type == "assignment_expression" \
                    and parent.child_by_field_name("left") == n:
                continue
            base = _squash(text(n.child_by_field_name("argument")))
            if not re.fullmatch(r"\w+(?:(?:->|\.)\w+)*", base):
                continue
            groups.setdefault(base, []).append(n)
        for base, uses in groups.items():
            root = _prefixes(base)[0]
            if rule.get("base_type") and not self._typed(root, rule["base_type"]):
                continue
            reads = sum(1 for u in uses if u.parent is not None and u.parent.type == "field_expression"
                        and u.parent.child_by_field_name("argument") == u and not _written(u.parent))
            min_reads = rule.get("min_field_reads", 1)
            if rule.get("named_walker") and self.named_mmu_walker(base):
                min_reads = rule.get("named_min_field_reads", min_reads)
            if reads < min_reads and len(uses) < rule.get("min_uses", len(uses) + 1) \
                    and not (reads and rule.get("read_beside_base") and _beside(uses, base, member)):
                continue
            if not self.stable(base) or f"{base}->{member}" in self.assigned:
                continue
            if all(_conditional(u, self.body) for u in uses):
                continue  # unused, so an error under -Werror, where the conditionals leave no use
            if root in self.locals and root not in self.params and \
                    not _uses_left(self.body, root, self.locals[root][0], uses):
                continue  # the base local would be left unused (walker-only-local's case, when it cannot)
            name, init = rule["name"], f"{base}->{member}"
            named = self.named_mmu_walker(base) if rule.get("named_walker") else None
            if named:
                name, init = named.split("|")
            if rule.get("embedded"):
                init = "&" + init
            if name in self.taken:
                continue
            self.declare(root, f"{rule['type']}{name} = {init};", rule)
            for u in uses:
                if rule.get("embedded"):
                    # `B->fmt.x` -> `fmt->x`; `&B->fmt` -> `fmt`; others -> `(*fmt)`.
                    par = u.parent
                    if par is not None and par.type == "field_expression" and \
                            par.child_by_field_name("argument") == u:
                        op = par.child_by_field_name("operator") or par.children[1]
                        self.add(u.start_byte, op.end_byte, f"{name}->", rule)
                    elif par is not None and par.type == "pointer_expression" and text(par).startswith("&"):
                        self.add(par.start_byte, par.end_byte, name, rule)
                    else:
                        self.add(u.start_byte, u.end_byte, f"(*{name})", rule)
                else:
                    self.add(u.start_byte, u.end_byte, name, rule)

    def _typed(self, root: str, type_key: str) -> bool:
        want = f"struct {self.rules.types[type_key]}"
        if root in self.locals:
            return self.locals[root][2] == want and "*" in text(self.locals[root][0])
        return root in self.params and self.params[root].startswith(want) and "*" in self.params[root]

    def walker_only(self, rule) -> None:
        """A local MMU pointer used only to reach its walker becomes the walker."""
        from refactor.plan.narrow import walker_name

        mmu_t = f"struct {self.rules.types['mmu']}"
        for name, (decl, value, ctype) in self.locals.items():
            if ctype != mmu_t or len(_declared_names(decl)) != 1 or not re.search(rf"\*\s*{name}\b", text(decl)):
                continue
            reads, rhs, ok = [], [value] if value is not None else [], True
            lefts = []
            for n in _walk(self.body):
                if n.type != "identifier" or text(n) != name or decl.start_byte <= n.start_byte < decl.end_byte:
                    continue
                par = n.parent
                if par.type == "field_expression" and text(par.child_by_field_name("field")) == "w" \
                        and text(par.child_by_field_name("operator") or par.children[1]) == "->" \
                        and not _pointer_written(par):
                    # Reads and writes of the walker's fields (`fault_mmu->w->x = y`) alike.
                    reads.append(par)
                elif par.type == "assignment_expression" and par.child_by_field_name("left") == n \
                        and text(par.child_by_field_name("operator") or par.children[1]) == "=" \
                        and par.parent.type == "expression_statement":
                    lefts.append(n)
                    rhs.append(par.child_by_field_name("right"))
                else:
                    ok = False
                    break
            if not ok or not reads or not rhs:
                continue
            leaves = []
            for r in rhs:
                parts = [r.child_by_field_name("consequence"), r.child_by_field_name("alternative")] \
                    if r.type == "conditional_expression" else [r]
                for leaf in parts:
                    m = re.fullmatch(r"&(\w+(?:->|\.)arch)\.(\w+)", re.sub(r"\s+", "", text(leaf)))
                    info = self.rules.vcpu_old.get(m.group(2)) if m else None
                    if m and info is not None and info.kind == "mmu" and info.walker:
                        leaves.append((leaf, f"&{m.group(1)}.{getattr(self.names, info.walker)}"))
                    elif not m and re.fullmatch(r"[\w>.\-]+", text(leaf)):
                        leaves.append((leaf, f"{text(leaf)}->w"))
                    else:
                        ok = False
            new = walker_name(name, self.taken)
            if not ok or new == name:
                continue
            tnode = decl.child_by_field_name("type")
            self.add(tnode.start_byte, tnode.end_byte, f"struct {self.rules.types['walker']}", rule)
            ident = next(n for n in _walk(decl) if n.type == "identifier" and text(n) == name)
            self.add(ident.start_byte, ident.end_byte, new, rule)
            for r in reads:
                self.add(r.start_byte, r.end_byte, new, rule)
            for n in lefts:
                self.add(n.start_byte, n.end_byte, new, rule)
            delta = len(new) - len(name)
            for leaf, repl in leaves:
                line = self.data.rfind(b"\n", 0, leaf.start_byte) + 1
                lead = self.data[line:leaf.start_byte]
                if delta and lead.strip() == b"" and any(leaf.start_byte > n.start_byte for n in lefts):
                    # A continuation aligned under the right-hand side moves with it.
                    col = len(lead.decode().expandtabs(8)) + delta
                    self.add(line, leaf.start_byte, "\t" * (col // 8) + " " * (col % 8), rule)
                self.add(leaf.start_byte, leaf.end_byte, repl, rule)

    def own_name(self, rule) -> None:
        """A walker local set to a named walker takes its name; other reaches go through it."""
        for name, (decl, value, ctype) in self.locals.items():
            if ctype != self.walker_t or value is None:
                continue
            m = re.fullmatch(r"&(\w+(?:->|\.)arch)\.(\w+)", _squash(text(value)))
            if m is None or m.group(2) not in (self.names.gva, self.names.ngpa):
                continue
            arch, walker = m.group(1), m.group(2)
            new = name
            if name == rule["generic_name"] and walker not in self.taken and self.stable(m.group(1)):
                new = walker
                for n in _walk(self.fn):
                    if n.type == "identifier" and text(n) == name:
                        self.add(n.start_byte, n.end_byte, new, rule)
            # `&ARCH.walker` and `ARCH.walker.x` after the declaration.
            for n in _walk(self.body):
                if n.start_byte < decl.end_byte:
                    continue
                if n.type == "pointer_expression" and _squash(text(n)) == f"&{arch}.{walker}":
                    self.add(n.start_byte, n.end_byte, new, rule)
                elif n.type == "field_expression" and _squash(text(n.child_by_field_name("argument"))) \
                        == f"{arch}.{walker}" and (n.parent is None or n.parent.type != "pointer_expression"
                                                    or not text(n.parent).startswith("&")):
                    op = n.child_by_field_name("operator") or n.children[1]
                    arg = n.child_by_field_name("argument")
                    self.add(arg.start_byte, op.end_byte, f"{new}->", rule)


def _rename_typed(rel: str, data: bytes, fn: Node, rule, rules: Rules) -> list[Edit]:
    """Parameters and locals of one pointer type take the name the rule gives them."""
    want = f"struct {rules.types[rule['type_key']]}"
    name = rule["name"]
    idents = [n for n in _walk(fn) if n.type == "identifier"]
    if any(text(n) == name for n in idents):
        return []
    olds = []
    for n in _walk(fn):
        kinds = ("parameter_declaration",) if rule.get("params_only") else ("parameter_declaration", "declaration")
        if n.type in kinds and re.sub(r"\s+", " ", text(n.child_by_field_name("type") or n)) == want:
            for d in n.children_by_field_name("declarator"):
                t = text(d)
                m = re.match(r"\*\s*(\w+)\s*(?:=|$)", t)
                if m:
                    olds.append(m.group(1))
    if len(set(olds)) != 1:
        return []  # none, or two of them: which one would get the name?
    old = olds[0]
    why = rule["why"]
    return [Edit(rel, n.start_byte, n.end_byte, name, rule["id"], why, old, data.count(b"\n", 0, n.start_byte) + 1)
            for n in idents if text(n) == old]


def apply_locals(rel: str, data: bytes, rules: Rules, names: WalkerNames, apply) -> tuple[bytes, list[Edit]]:
    """The file with every [[locals]] rule applied, and the edits made (rule by rule)."""
    done: list[Edit] = []
    off = rules.stage.restructure_off if rules.stage is not None else frozenset()
    for rule in rules.restructure.get("locals", []):
        if rule.id in off:
            continue  # a later step of the series brings it in (steps.toml restructure)
        params = dict(rule.params, id=rule.id, why=rule.why)
        if params.get("member", "").encode() not in data and params["kind"] == "hoist":
            continue
        if params["kind"] == "rename_typed" and rules.types[params["type_key"]].encode() not in data:
            continue
        if params["kind"] == "own_name" and not (names.gva.encode() in data or names.ngpa.encode() in data):
            continue
        pf = parse(rel, data, want_macros=False)
        edits: list[Edit] = []
        for fn in top_level(pf.main.tree.root_node):
            if fn.type != "function_definition" or fn.child_by_field_name("body") is None:
                continue
            if params["kind"] == "rename_typed":
                edits += _rename_typed(rel, data, fn, params, rules)
                continue
            f = _FunctionLocals(rel, data, fn, rules, names)
            if params["kind"] == "hoist":
                f.hoist(params)
            elif params["kind"] == "own_name":
                f.own_name(params)
            elif params["kind"] == "walker_only":
                f.walker_only(params)
            edits += f.edits
        if edits:
            data = apply(data, edits)
            done += edits
    return data, done

"""The index: every reference to the names the refactor moves, typed.

Lexer first, parser second: every occurrence of a tracked name is found by
the lexer (so none can be lost), then the syntax tree says what it is: a
member access and the static type of its base, its use, the enclosing
function, flow facts.  Where the parser could not read the text (an ERROR
region, a masked macro) the reference is kept and marked `via: token`.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tree_sitter import Node

from refactor.frontend.ctype import CType, text
from refactor.frontend.lexer import LineIndex, tokens
from refactor.frontend.parse import Fragment, ParsedFile, parse
from refactor.rules import Rules, load_rules
from refactor.frontend.source import SourceFile, discover, kernel_version
from refactor.index.program import Program, Scope, function_name, squash

CONTRACT_KEYS = ("file", "line", "column", "symbol", "context", "function", "expression", "use")


@dataclass(slots=True)
class Reference:
    file: str
    line: int
    column: int  # 0-based byte column, as compilers report +1
    symbol: str
    kind: str  # vcpu_member | mmu_field | type | new_name | field | identifier
    context: str  # code | comment | string
    function: str | None
    expression: str
    use: str
    start: int
    end: int
    via: str = "tree"  # tree | token (read by the lexer only)
    region: str = "code"  # code | macro | error | masked
    base: str | None = None
    base_type: str | None = None
    access: str | None = None  # whole access chain the reference is part of
    callee: str | None = None
    argument_index: int | None = None
    known_target: str | None = None  # what a kvm_mmu pointer base was set to
    base_values: list[str] | None = None

    def to_json(self) -> dict:
        out = asdict(self)
        # The contract's keys are always present; optional facts only when known.
        return {k: v for k, v in out.items() if v is not None or k in CONTRACT_KEYS}


@dataclass
class Index:
    tree: str
    version: str | None
    layout: str
    references: list[Reference]
    unparsed: list[dict]
    program: Program = field(repr=False, default_factory=Program)
    walkers: list[str] = field(default_factory=list)
    files: dict[str, ParsedFile] = field(repr=False, default_factory=dict)

    def to_json(self) -> dict:
        return {
            "tree": self.tree,
            "version": self.version,
            "layout": self.layout,
            "walkers": self.walkers,
            "references": [r.to_json() for r in self.references],
            "unparsed": self.unparsed,
        }

    def code_references(self) -> list[Reference]:
        return [r for r in self.references if r.context == "code"]


class Tracker:
    """Which names to look for, and which of them are unambiguous."""

    def __init__(self, rules: Rules, program: Program):
        self.rules = rules
        self.vcpu_members = set(rules.old_vcpu_members())
        mmu_struct = program.structs.members.get(rules.types["mmu"], {})
        self.mmu_fields = set(rules.mmu_fields) | set(mmu_struct)
        self.types = set(rules.type_names())
        arch = program.structs.members.get(rules.types["vcpu_arch"], {})
        walker_struct = f"struct {rules.types['walker']}"
        self.tree_walkers = [n for n, t in arch.items() if t.name == walker_struct and t.depth == 0]
        self.new_names = set(rules.new_member_names()) | set(self.tree_walkers)
        self.all = frozenset(self.vcpu_members | self.mmu_fields | self.types | self.new_names)
        # A name declared in some other struct, or used for locals, needs a type to be ours.
        other_fields: set[str] = set()
        for sname, members in program.structs.members.items():
            if sname not in (rules.types["mmu"], rules.types["vcpu_arch"], rules.types["walker"],
                             rules.types["format"], rules.types["old_format"]):
                other_fields |= set(members)
        self.ambiguous = frozenset((self.all & other_fields) | {"mmu", "w", "fmt", "root"})

    def distinct(self, name: str) -> bool:
        return name in self.all and name not in self.ambiguous


def _field_kind(tracker: Tracker, rules: Rules, name: str, struct: str | None,
                base_text: str) -> str | None:
    """Classify `base.name` by the base's struct; None if not ours."""
    arch = rules.types["vcpu_arch"]
    if name in tracker.vcpu_members or name in tracker.tree_walkers or name in rules.new_member_names():
        on_arch = struct == arch or (struct is None and squash(base_text).endswith("arch"))
        if on_arch:
            return "vcpu_member" if name in tracker.vcpu_members else "new_name"
    if name in tracker.mmu_fields and struct in (None, rules.types["mmu"]):
        if struct is None and name in tracker.ambiguous:
            return None
        return "mmu_field"
    if name in tracker.new_names and struct in (None, rules.types["mmu"], rules.types["walker"]):
        if struct is None and name in tracker.ambiguous:
            return None
        return "new_name"
    if tracker.distinct(name):
        return "field"
    return None


class _FileIndexer:
    def __init__(self, pf: ParsedFile, program: Program, tracker: Tracker, rules: Rules):
        self.pf = pf
        self.program = program
        self.tracker = tracker
        self.rules = rules
        self.lines = LineIndex(pf.src)
        self.scopes: dict[tuple[int, int], Scope] = {}
        self.globals = {}
        root = pf.main.tree.root_node
        from refactor.frontend.ctype import declared

        for child in root.named_children:
            if child.type == "declaration":
                for name, ctype, _ in declared(child):
                    self.globals.setdefault(name, ctype)

    def src_of(self, frag: Fragment):
        return lambda node: self.pf.text(node, frag)

    def scope(self, node: Node, frag: Fragment) -> tuple[Scope, str | None]:
        fn = node
        while fn is not None and fn.type != "function_definition":
            fn = fn.parent
        key = (id(frag), fn.start_byte if fn is not None else -1)
        if key not in self.scopes:
            self.scopes[key] = Scope(self.program, fn, self.src_of(frag), self.globals)
        name = function_name(fn) if fn is not None else None
        if frag.is_macro:
            name = f"#define {frag.macro}" + (f" ({name})" if name else "")
        return self.scopes[key], name

    def run(self) -> list[Reference]:
        out = []
        for tok in tokens(self.pf.src, self.tracker.all):
            ref = self.classify(tok.name, tok.start, tok.end, tok.context)
            if ref is not None:
                out.append(ref)
        return out

    def _ref(self, name, start, end, context, **kw) -> Reference:
        line, col = self.lines.position(start)
        kw.setdefault("expression", name)
        kw.setdefault("use", "text" if context != "code" else "read")
        kw.setdefault("kind", "identifier")
        kw.setdefault("function", None)
        return Reference(file=self.pf.rel, line=line, column=col, symbol=name, context=context,
                         start=start, end=end, **kw)

    def _enclosing_function_text(self, start: int) -> str | None:
        node = self.pf.main.tree.root_node.descendant_for_byte_range(start, start)
        while node is not None and node.type != "function_definition":
            node = node.parent
        return function_name(node) if node is not None else None

    def classify(self, name: str, start: int, end: int, context: str) -> Reference | None:
        if context != "code":
            return self._ref(name, start, end, context, kind=self._text_kind(name),
                             function=self._enclosing_function_text(start))
        frag = self.pf.fragment_for(start, end)
        node = frag.node_at(start, end)
        region = "macro" if frag.is_macro else "code"
        if node is None or self.pf.in_error(start, end) or self.pf.in_masked(start, end):
            return self._fallback(name, start, end, "error" if self.pf.in_error(start, end)
                                  else "masked" if self.pf.in_masked(start, end) else region)
        scope, func = self.scope(node, frag)
        parent = node.parent
        ptype = parent.type if parent is not None else ""
        src_of = self.src_of(frag)
        if node.type == "field_identifier" and ptype == "field_expression":
            return self._member(name, start, end, node, parent, scope, func, region, src_of)
        if node.type == "field_identifier" and ptype == "field_declaration":
            return self._declared_member(name, start, end, node, parent, func, region)
        if node.type == "field_identifier" and ptype == "field_designator":
            if not self.tracker.distinct(name) and name not in self.tracker.mmu_fields:
                return None
            return self._ref(name, start, end, "code", kind="field", use="designator",
                             function=func, region=region, expression=src_of(parent))
        if node.type == "field_identifier" and name in self.tracker.all and parent is not None \
                and parent.type.endswith("declarator"):
            return self._declared_member(name, start, end, node, parent, func, region)
        if node.type == "type_identifier" and name in self.tracker.types:
            return self._type_ref(name, start, end, node, func, region, src_of)
        if self.tracker.distinct(name):
            # A plain identifier with a tracked name (a local, a macro argument...).
            use, callee, idx = _use_of(node, src_of)
            return self._ref(name, start, end, "code", kind="identifier", use=use, callee=callee,
                             argument_index=idx, function=func, region=region)
        return None

    def _text_kind(self, name: str) -> str:
        if name in self.tracker.vcpu_members:
            return "vcpu_member"
        if name in self.tracker.types:
            return "type"
        if name in self.tracker.mmu_fields:
            return "mmu_field"
        return "new_name"

    def _fallback(self, name: str, start: int, end: int, region: str) -> Reference | None:
        src = self.pf.src
        before = src[max(0, start - 12):start]
        member = before.rstrip().endswith((b"->", b"."))
        if not self.tracker.distinct(name):
            # An ambiguous name counts only where its shape says it is ours.
            if not (name == "mmu" and before.replace(b" ", b"").endswith((b"arch.", b"arch->"))):
                return None
        kind = self._text_kind(name) if member or name in self.tracker.types else "identifier"
        line, _ = self.lines.position(start)
        lo, hi = self.lines.line_span(line)
        return self._ref(name, start, end, "code", kind=kind, via="token", region=region,
                         use="read", function=self._enclosing_function_text(start),
                         expression=src[lo:hi].decode("utf-8", "replace").strip())

    def _member(self, name, start, end, node, parent, scope: Scope, func, region, src_of):
        base = parent.child_by_field_name("argument")
        op = text(parent.child_by_field_name("operator"))
        base_type = scope.type_of(base)
        obj_type = base_type.deref() if (base_type is not None and op == "->") else base_type
        struct = obj_type.struct if obj_type is not None else None
        base_text = src_of(base) if base is not None else ""
        kind = _field_kind(self.tracker, self.rules, name, struct, base_text)
        if kind is None:
            return None
        top = parent
        while top.parent is not None and top.parent.type in ("field_expression", "subscript_expression") \
                and top.parent.child_by_field_name("argument") == top:
            top = top.parent
        use, callee, idx = _use_of(parent, src_of)
        ref = self._ref(name, start, end, "code", kind=kind, use=use, callee=callee,
                        argument_index=idx, function=func, region=region,
                        expression=src_of(parent), access=src_of(top), base=base_text,
                        base_type=str(base_type) if base_type is not None else None)
        self._flow(ref, base, base_text, base_type, scope, start)
        return ref

    def _flow(self, ref: Reference, base, base_text: str, base_type: CType | None, scope: Scope,
              offset: int) -> None:
        """Record what a kvm_mmu pointer base (or vcpu->arch.mmu itself) was set to."""
        target = None
        if ref.symbol == "mmu" and ref.kind == "vcpu_member":
            target = ref.expression
        elif base_type is not None and base_type.struct == self.rules.types["mmu"] and base_type.depth:
            target = base_text
        if target is None:
            return
        values = scope.values_before(target, offset)
        if values:
            ref.known_target = values[-1]
        if base is not None and base.type == "identifier":
            ref.base_values = scope.values_anywhere(target) or None

    def _declared_member(self, name, start, end, node, parent, func, region):
        decl = parent
        while decl is not None and decl.type != "field_declaration":
            decl = decl.parent
        struct_node = decl.parent if decl is not None else None
        while struct_node is not None and struct_node.type not in ("struct_specifier", "union_specifier"):
            struct_node = struct_node.parent
        struct = text(struct_node.child_by_field_name("name")) if struct_node is not None else None
        ours = {self.rules.types["mmu"], self.rules.types["vcpu_arch"], self.rules.types["walker"],
                self.rules.types["format"], self.rules.types["old_format"]}
        if struct not in ours and not self.tracker.distinct(name):
            return None
        if struct == self.rules.types["vcpu_arch"]:
            kind = ("vcpu_member" if name in self.tracker.vcpu_members
                    else "new_name" if name in self.tracker.new_names else "field")
        elif struct == self.rules.types["mmu"]:
            kind = "mmu_field" if name in self.tracker.mmu_fields else "new_name"
        else:
            kind = "field"
        return self._ref(name, start, end, "code", kind=kind, use="member-declaration",
                         function=func or (f"struct {struct}" if struct else None), region=region,
                         expression=" ".join(text(decl).split()) if decl is not None else name,
                         base_type=f"struct {struct}" if struct else None)

    def _type_ref(self, name, start, end, node, func, region, src_of):
        spec = node.parent
        use = "type"
        holder = spec.parent if spec is not None else None
        if spec is not None and spec.child_by_field_name("body") is not None:
            use = "definition"
        elif holder is not None and holder.type == "parameter_declaration":
            use = "parameter"
        elif holder is not None and holder.type in ("declaration", "field_declaration"):
            use = "declaration" if holder.type == "declaration" else "member-declaration"
        expr = src_of(holder) if holder is not None and use != "definition" else f"struct {name}"
        return self._ref(name, start, end, "code", kind="type", use=use, function=func,
                         region=region, expression=" ".join(expr.split())[:200])


def _use_of(expr: Node, src_of) -> tuple[str, str | None, int | None]:
    """How the value of `expr` is used by its parent."""
    parent = expr.parent
    while parent is not None and parent.type == "parenthesized_expression":
        expr, parent = parent, parent.parent
    if parent is None:
        return "read", None, None
    kind = parent.type
    if kind == "field_expression" and parent.child_by_field_name("argument") == expr:
        return "base", None, None
    if kind == "assignment_expression" and parent.child_by_field_name("left") == expr:
        return "write", None, None
    if kind == "update_expression":
        return "write", None, None
    if kind == "pointer_expression" and text(parent.child_by_field_name("operator")) == "&":
        outer_use, callee, idx = _use_of(parent, src_of)
        if outer_use == "argument":
            return "address", callee, idx
        return "address", None, None
    if kind == "call_expression" and parent.child_by_field_name("function") == expr:
        return "call", None, None
    if kind == "argument_list":
        call = parent.parent
        args = [c for c in parent.named_children if c.type != "comment"]
        idx = next((i for i, a in enumerate(args) if a == expr), None)
        callee = src_of(call.child_by_field_name("function")) if call is not None else None
        return "argument", " ".join(callee.split()) if callee else None, idx
    if kind == "binary_expression" and text(parent.child_by_field_name("operator")) in ("==", "!="):
        return "compare", None, None
    if kind in ("subscript_expression",) and parent.child_by_field_name("argument") == expr:
        return "base", None, None
    return "read", None, None


def detect_layout(program: Program, rules: Rules, refs: list[Reference]) -> str:
    arch = program.structs.members.get(rules.types["vcpu_arch"], {})
    walker_struct = f"struct {rules.types['walker']}"
    old = any(m in arch for m, v in rules.vcpu_old.items() if v.removed)
    new = any(t.name == walker_struct and t.depth == 0 for t in arch.values())
    # New-layout code in a tree whose header is still old (a half-done port).
    new = new or any(r.context == "code" and r.kind == "type" and r.symbol == rules.types["walker"]
                     and r.use != "definition" for r in refs)
    if not arch:
        # No struct definition in the tree: judge by the code.
        old = any(r.context == "code" and r.kind == "vcpu_member" and rules.vcpu_old[r.symbol].removed
                  for r in refs if r.symbol in rules.vcpu_old)
        new = any(r.context == "code" and r.kind == "new_name" for r in refs)
    if old and new:
        return "mixed"
    if new:
        stale = any(r.context == "code" and r.via == "tree" and r.kind == "vcpu_member"
                    and rules.vcpu_old[r.symbol].removed for r in refs)
        return "mixed" if stale else "new"
    return "old" if old else "unknown"


def scan_tree(root: str | Path, rules: Rules | None = None, progress=None,
              use_cache: bool = True) -> Index:
    """The index of a tree, from the content-hash cache when nothing changed.

    A cached Index has no syntax trees (`files` is empty); consumers that edit
    code parse the files they touch.
    """
    from refactor.index import cache

    rules = rules or load_rules()
    files = discover(Path(root))
    key = cache.key_for(files, rules) if use_cache else None
    if key:
        hit = cache.load(key)
        if isinstance(hit, Index):
            hit.tree = str(root)
            return hit
    index = build_index(root, rules, progress, files=files)
    if key:
        slim = Index(index.tree, index.version, index.layout, index.references, index.unparsed,
                     index.program, index.walkers, {})
        cache.store(key, slim)
    return index


def build_index(root: str | Path, rules: Rules | None = None, progress=None,
                files: list[SourceFile] | None = None) -> Index:
    """Index a kernel tree (see docs/index-format.md for the JSON form)."""
    rules = rules or load_rules()
    root = Path(root)
    files = discover(root) if files is None else files
    program = Program()
    parsed: dict[str, ParsedFile] = {}
    unparsed: list[dict] = []
    for sf in files:
        if progress:
            progress(sf.rel)
        if sf.problem:
            unparsed.append({"file": sf.rel, "reason": sf.problem})
            if sf.problem.startswith(("empty", "unreadable")):
                continue
        pf = parse(sf.rel, sf.data if not sf.problem or "UTF-8" in sf.problem or "larger" in sf.problem
                   else _printable(sf.data))
        parsed[sf.rel] = pf
        program.learn(pf.main.tree.root_node, sf.rel)
    tracker = Tracker(rules, program)
    refs: list[Reference] = []
    type_only = {sf.rel for sf in files if sf.type_only}
    for rel, pf in parsed.items():
        if rel in type_only:
            continue
        refs.extend(_FileIndexer(pf, program, tracker, rules).run())
        lines = LineIndex(pf.src)
        for s, e in sorted(set(pf.error_spans)):
            first, last = lines.position(s)[0], lines.position(max(s, e - 1))[0]
            unparsed.append({"file": rel, "line": first, "end_line": last,
                             "reason": "syntax not understood (names here read by the lexer)"})
    layout = detect_layout(program, rules, refs)
    return Index(tree=str(root), version=kernel_version(root), layout=layout, references=refs,
                 unparsed=unparsed, program=program, walkers=tracker.tree_walkers, files=parsed)


def index_sources(files: Mapping[str, bytes | str], rules: Rules | None = None, *,
                  program: Program | None = None, tree: str = "<memory>") -> Index:
    """Index files held in memory (a patch's post-image, a buffer being edited) as build_index does.

    `files` maps a tree-relative path to its content.  `program` is what is
    already known of the types (a tree's Index.program, copied by the caller
    if it must stay unchanged); the files' own declarations are added to it.
    """
    rules = rules or load_rules()
    program = program if program is not None else Program()
    parsed: dict[str, ParsedFile] = {}
    for rel, data in files.items():
        parsed[rel] = parse(rel, data.encode() if isinstance(data, str) else data)
        program.learn(parsed[rel].main.tree.root_node, rel)
    tracker = Tracker(rules, program)
    refs = [r for pf in parsed.values() for r in _FileIndexer(pf, program, tracker, rules).run()]
    unparsed = [{"file": rel, "reason": "syntax not understood (names here read by the lexer)"}
                for rel, pf in parsed.items() if pf.error_spans]
    return Index(tree=tree, version=None, layout=detect_layout(program, rules, refs), references=refs,
                 unparsed=unparsed, program=program, walkers=tracker.tree_walkers, files=parsed)


def _printable(data: bytes) -> bytes:
    """Binary file: keep bytes that can be text so the lexer still finds names."""
    return bytes(b if 9 <= b <= 126 or b == 10 else 32 for b in data)

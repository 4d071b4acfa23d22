"""The forward rewrite: an old-layout tree to struct kvm_pagewalk, from rules.

Pipeline: index (parse, type) -> narrow (which kvm_mmu pointers become
walkers) -> plan (edits per function, struct layouts, restructuring) ->
apply (kernel style) -> output (diff, in place, or JSON of every site).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from refactor.apply.splice import EditConflict, apply, long_lines, unified_diffs, write_atomic
from refactor.index.functions import collect, fnptr_params, function_macros, naming_macros
from refactor.index.identifiers import refuse_tree_names
from refactor.index.indexer import Index, build_index
from refactor.plan.coverage import blocked_walker_params, token_edits, uncovered, unplaced
from refactor.plan.hooks import plan_hook_helpers, walker_init_applies
from refactor.plan.layout_edit import plan_layout
from refactor.plan.mixed import headers_new, mixed_walkers, old_view, walker_fnptrs_as_old
from refactor.plan.narrow import Narrower, walker_fnptr_params, walker_name
from refactor.plan.restructure import plan_restructure
from refactor.rules import Rules, RulesError, Stage, WalkerNames, load_rules
from refactor.plan.edits import Edit, Human
from refactor.plan.translate import NARROW_PARAM, Context, FunctionRewriter
from refactor.index.program import Scope


@dataclass
class Plan:
    tree: Path
    names: WalkerNames
    layout: str
    edits: list[Edit] = field(default_factory=list)
    humans: list[Human] = field(default_factory=list)
    comments: list[dict] = field(default_factory=list)  # comments naming removed members
    narrowed: list[str] = field(default_factory=list)
    results: dict[str, bytes] = field(default_factory=dict)  # rel -> new content
    originals: dict[str, bytes] = field(default_factory=dict)
    style: list[dict] = field(default_factory=list)
    post_edits: list[Edit] = field(default_factory=list)  # edits of the rewritten text (restructuring)

    def diff(self) -> str:
        return unified_diffs({rel: (self.originals[rel], new) for rel, new in self.results.items()})

    def to_json(self) -> dict:
        return {
            "tree": str(self.tree),
            "layout": self.layout,
            "names": self.names.as_dict(),
            "narrowed": self.narrowed,
            "sites": [{"file": e.file, "line": e.line, "old": e.old, "new": e.new, "rule": e.rule,
                       "why": e.why} for e in sorted(self.edits, key=lambda e: (e.file, e.start))],
            "restructured": [{"file": e.file, "line": e.line, "old": e.old, "new": e.new, "rule": e.rule,
                              "why": e.why} for e in self.post_edits],
            "needs_human": [{"file": h.file, "line": h.line, "why": h.why, "text": h.text}
                            for h in self.humans],
            "comments": self.comments,
            "style": self.style,
            "files_changed": sorted(self.results),
        }


def write_plan(plan: Plan, root: str | Path | None = None) -> list[Path]:
    """Write the rewritten files of a plan into `root` (default: the plan's tree); returns the paths."""
    root = Path(root) if root is not None else plan.tree
    if root == plan.tree:
        # The plan's own tree: all or nothing, with the pre-checks and journal of `rewrite --in-place`.
        from refactor.apply.inplace import rewrite_in_place

        rewrite_in_place(root, plan.results, plan.originals)
        return [root / rel for rel in sorted(plan.results)]
    written = []
    for rel, data in plan.results.items():
        write_atomic(root / rel, data)
        written.append(root / rel)
    return written


def cached_plan(tree: str | Path, names_spec: str | None = "upstream", rules: Rules | None = None) -> Plan:
    """plan_rewrite, from the content-hash cache when the tree, rules and names did not change."""
    from refactor.index import cache
    from refactor.frontend.source import discover

    rules = rules or load_rules()
    files = discover(Path(tree))
    key = "plan-" + cache.key_for(files, rules) + "-" + re.sub(r"\W", "_", names_spec or "upstream")
    hit = cache.load(key)
    if isinstance(hit, Plan):
        hit.tree = Path(tree)
        return hit
    plan = plan_rewrite(tree, names_spec, rules, build_index(tree, rules, files=files))
    cache.store(key, plan)
    return plan


def _relevant(rules: Rules, extra: set[str]) -> re.Pattern:
    words = set(rules.vcpu_old) | set(rules.mmu_fields) | {rules.types["old_format"]} | extra
    words |= {c.function for c in rules.calls}
    words.discard("")
    return re.compile(r"\b(?:" + "|".join(sorted(map(re.escape, words), key=len, reverse=True)) + r")\b")


def plan_rewrite(tree: str | Path, names_spec: str | None = "upstream", rules: Rules | None = None,
                 index: Index | None = None) -> Plan:
    rules = rules or load_rules()
    tree = Path(tree)
    index = index or build_index(tree, rules)
    names = rules.names(names_spec)
    plan = Plan(tree, names, index.layout)
    if index.layout in ("new", "unknown"):
        return plan  # nothing old to move: the rewrite is idempotent by construction
    new_headers = headers_new(index.program, rules)
    if new_headers:
        # A half-done tree: its remaining old code is typed as the old layout.
        index.program = old_view(index.program, rules)
    taken = set(index.program.functions)
    for members in index.program.structs.members.values():
        taken |= set(members)
    if new_headers:
        taken -= set(rules.new_fields)  # `w`, `fmt`: members of the new layout, free for locals
    done_walkers = mixed_walkers(index, rules)
    if done_walkers:
        # A half-done tree: finish it under the walker names it already has.
        if not done_walkers <= {names.gva, names.ngpa}:
            raise RulesError(f"{tree}: half rewritten with walkers {', '.join(sorted(done_walkers))}; "
                             f"finish it with the same names (--names gva=...,ngpa=...)")
        taken -= done_walkers
    rules.check_names(names, frozenset(n for n in taken if n in (names.gva, names.ngpa)))
    # Not only functions and members: macros, types, variables too (refactor/index/identifiers.py).
    refuse_tree_names(index.files, names, done_walkers)

    files = {rel: pf for rel, pf in index.files.items()}
    walker_word = rules.types["walker"].encode()
    defs, protos = collect(files, lambda body: b"kvm_mmu" in body or b"rsvd_bits_validate" in body
                           or (new_headers and walker_word in body))
    fnptrs = fnptr_params(files, rules.types["mmu"])
    if new_headers:
        fnptrs = {**walker_fnptrs_as_old(files, rules), **fnptrs}
    narrower = Narrower(defs, protos, rules, walker_fnptr_params(fnptrs, rules),
                        naming_macros(files), function_macros(files))
    stage = rules.stage or Stage()
    result = narrower.run()
    if not stage.narrow:
        result.narrowed, result.forced = set(), {}
    elif stage.narrow_only is not None:
        # A step narrowing some functions only (steps.toml `narrow = [...]`): a function
        # made by a #define counts under the macro's name too.
        def chosen(fn_name: str) -> bool:
            return fn_name in stage.narrow_only or any(
                f.frag.macro in stage.narrow_only for f in defs.get(fn_name, []))

        result.narrowed = {k for k in result.narrowed if chosen(k[0])}
        result.forced = {k: v for k, v in result.forced.items() if chosen(k[0])}
    for key, why in result.forced.items():
        if key not in result.narrowed:
            fn = defs[key[0]][0]
            if any(v.name == key[1] and v.ctype.name == f"struct {rules.types['walker']}" for v in fn.params):
                continue  # a half-done tree's: it takes a walker already
            line = files[fn.file].src.count(b"\n", 0, fn.node.start_byte + fn.frag.offset) + 1
            plan.humans.append(Human(fn.file, line,
                                     f"{key[0]}() must take a walker ({why}) but {key[1]} "
                                     f"{result.blocked.get(key, 'cannot be narrowed')}"))
    renames, walker_params, mmu_params = {}, {}, {}
    for name, fns in defs.items():
        for fn in fns:
            scope_names = {v.name for v in fn.params + fn.locals}
            for v in fn.params + fn.locals:
                if (name, v.name) in result.narrowed:
                    renames[(name, v.name)] = walker_name(v.name, scope_names | taken)
                    if v.index is not None:
                        walker_params.setdefault(name, set()).add(v.index)
                elif v.index is not None and v.ctype.name == f"struct {rules.types['mmu']}" and v.ctype.depth:
                    mmu_params.setdefault(name, set()).add(v.index)
                elif v.index is not None and v.ctype.name == f"struct {rules.types['walker']}" \
                        and v.ctype.depth == 1:
                    walker_params.setdefault(name, set()).add(v.index)  # a half-done tree's
                # A variable named after a field that the layout renames takes the new name
                # (`struct rsvd_bits_validate *shadow_zero_check` -> `*fmt`).
                field_rule = rules.mmu_fields.get(v.name)
                if field_rule is not None and v.ctype.struct == rules.types["old_format"]:
                    new = field_rule.path.rsplit(".", 1)[-1]
                    if new != v.name and new not in scope_names:
                        renames[(name, v.name)] = new
    # A function the tree only declares (defined elsewhere): its struct kvm_mmu * parameters
    # stay, so a walker passed there is converted to the MMU the rules give for it.
    for name, decls in protos.items():
        if name not in defs:
            for proto in decls:
                for p in proto.params:
                    if p.index is not None and p.ctype.name == f"struct {rules.types['mmu']}" \
                            and p.ctype.depth:
                        mmu_params.setdefault(name, set()).add(p.index)
    plan.narrowed = sorted(f"{f}:{v}" for f, v in result.narrowed)
    callee_names = {n for n in walker_params} | {n for n in mmu_params}
    prefixes = {p for ps in naming_macros(files).values() for p in ps}
    extra = {v for (_, v) in renames} | {k[1] for k in result.blocked} | callee_names
    extra |= {p + n.split("(", 1)[1].rstrip(")") for n in callee_names if "(" in n for p in prefixes}
    extra |= {f"{k[0]}" for k in result.narrowed}
    extra |= {name for name, variants in narrower.macros.items()
              if any(narrower.walker_macro_param(name, i) for i in range(len(variants[0].params)))}
    ctx = Context(rules, names, result.narrowed, renames, walker_params, narrower.callee,
                  narrower.walker_macro_param, mmu_params,
                  narrower.fnptr if stage.narrow and stage.narrow_only is None else {}, _relevant(rules, extra))
    # Walker-reading parameters that stay struct kvm_mmu *: a walk-only MMU passed there is a human's.
    ctx.blocked_walker = blocked_walker_params(defs, result.blocked, rules)
    ctx.macro_names = frozenset(narrower.macros)  # function-like macros: defined, untyped
    skip_structs = {rules.types["mmu"], rules.types["vcpu_arch"], rules.types["old_format"]}
    for rel, pf in files.items():
        if not _type_only(index, rel):
            _rewrite_file(ctx, index, pf, defs, skip_structs)
    _rewrite_prototypes(ctx, protos, files, defs)
    if not new_headers:
        ctx.edits.extend(plan_layout(files, rules, names, stage))
    # else: a half-done tree whose headers already have the new layout (only code left)
    if stage.introduce_walker:
        ctx.edits.extend(plan_restructure(files, defs, rules, names, ctx))
    plan.edits = ctx.edits
    plan.humans.extend(ctx.humans)
    # Never silent: what only the lexer could read is rewritten by token rules where the
    # base's type is known; an old name no edit touched is a site for a human.
    ctx.edits.extend(token_edits(index, rules, names, ctx.edits, plan.narrowed))
    plan.humans.extend(uncovered(index, ctx.edits, rules, plan.narrowed))
    plan.humans.extend(unplaced(index, rules))
    if stage.introduce_walker and not new_headers:   # the rewrite is what shares the walker
        from refactor.plan.prerequisites import missing_prerequisites

        plan.humans.extend(missing_prerequisites(defs, files, rules))
    plan.comments = [{"file": r.file, "line": r.line, "symbol": r.symbol}
                     for r in index.references if r.context == "comment"
                     and r.symbol in rules.vcpu_old and rules.vcpu_old[r.symbol].removed]
    _apply_all(plan, files)
    plan_hook_helpers(plan, files, index.program, rules, names)
    if stage.walker_init and walker_init_applies(index.program, rules):
        _walker_init_pass(plan, rules, names)
    if stage.introduce_walker:
        _locals_pass(plan, rules, names)
        # Restructuring that reads the finished code (SPTE checks, known walkers, MMU locals).
        from refactor.plan.restructure_post import apply_post_restructure

        apply_post_restructure(plan, files, rules, names, apply)
    return plan


def _locals_pass(plan: Plan, rules: Rules, names: WalkerNames) -> None:
    """Maintainer-style locals on the rewritten code (rules/restructure.toml [[locals]])."""
    from refactor.plan.locals import apply_locals
    from refactor.plan.walker_param import apply_walker_params

    # Functions that pick their MMU by its walker take the walker ([[walker_param]]).
    plan.post_edits.extend(apply_walker_params(plan.results, rules, names, apply))
    # Walker functions split over what they read of the walker ([[parameterize]]).
    from refactor.plan.parameterize import plan_parameterize

    for rel in sorted(plan.results):
        edits = plan_parameterize(rel, plan.results[rel], rules)
        if edits:
            plan.post_edits.extend(edits)
            plan.results[rel] = apply(plan.results[rel], edits)

    for rel in sorted(plan.results):
        new, edits = apply_locals(rel, plan.results[rel], rules, names, apply)
        if edits:
            plan.post_edits.extend(edits)
            plan.results[rel] = new


def _walker_init_pass(plan: Plan, rules: Rules, names: WalkerNames) -> None:
    """Restructuring that reads the rewritten code (rules/restructure.toml [[walker_init]])."""
    from refactor.plan.walker_init import plan_walker_init

    for rel in sorted(plan.results):
        data = plan.results[rel]
        edits = plan_walker_init(rel, data, rules, names, plan.humans)
        if edits:
            plan.post_edits.extend(edits)
            plan.results[rel] = apply(data, edits)


def _apply_all(plan: Plan, files) -> None:
    by_file: dict[str, list[Edit]] = {}
    for e in plan.edits:
        by_file.setdefault(e.file, []).append(e)
    for rel, edits in by_file.items():
        src = files[rel].src
        try:
            new = apply(src, edits)
        except EditConflict as exc:
            plan.humans.append(Human(rel, 0, str(exc)))
            continue
        if new != src:
            new = _retab_new_lines(src, new)
            plan.results[rel] = new
            plan.originals[rel] = src
            for line, width in long_lines(rel, src, new):
                plan.style.append({"file": rel, "line": line, "columns": width})


def _retab_new_lines(old: bytes, new: bytes) -> bytes:
    """Lines the rewrite wrote are indented with tabs, even where the old line used spaces.

    checkpatch flags space indentation on every added line; a line the rewrite
    changes is an added line of the patch, so it follows kernel style.
    """
    before = set(old.split(b"\n"))
    lines = new.split(b"\n")
    for k, line in enumerate(lines):
        if b"        " not in line[:len(line) - len(line.lstrip(b" \t"))] or line in before:
            continue
        body = line.lstrip(b" \t")
        col = len(line[:len(line) - len(body)].expandtabs(8))
        lines[k] = b"\t" * (col // 8) + b" " * (col % 8) + body
    return b"\n".join(lines)


def _type_only(index: Index, rel: str) -> bool:
    """Files read for their types only (source.TYPE_ONLY) are not rewritten."""
    from refactor.frontend.source import TYPE_ONLY

    return rel in TYPE_ONLY


def _rewrite_file(ctx: Context, index: Index, pf, defs, skip_structs) -> None:
    if not ctx.relevant.search(pf.src.decode("utf-8", "replace")):
        return
    from refactor.index.functions import top_level
    from refactor.index.program import function_name

    globals_ = {}
    root = pf.main.tree.root_node
    for node in top_level(root):
        if node.type == "function_definition":
            name = function_name(node)
            scope = Scope(index.program, node, lambda n, f=pf.main: pf.text(n, f), globals_)
            FunctionRewriter(ctx, pf, pf.main, name, scope).top(node)
        elif node.type in ("declaration", "type_definition", "struct_specifier"):
            # The structs the layout rules rewrite are left to plan_layout().
            spec = node if node.type == "struct_specifier" else node.child_by_field_name("type")
            name = spec.child_by_field_name("name") if spec is not None and spec.type == "struct_specifier" \
                else None
            if name is not None and pf.text(name, pf.main) in skip_structs:
                continue
            if _is_prototype(node):
                continue
            scope = Scope(index.program, None, lambda n, f=pf.main: pf.text(n, f), globals_)
            FunctionRewriter(ctx, pf, pf.main, None, scope).top(node)
    # #else branches the main tree left out (frontend.conditionals): their own tree,
    # keeping only the edits inside the branch.
    for astart, aend, frag in getattr(pf, "alternates", ()):
        for node in top_level(frag.tree.root_node):
            if node.type != "function_definition" or node.end_byte <= astart or node.start_byte >= aend:
                continue
            scope = Scope(index.program, node, lambda n, f=frag: pf.text(n, f), globals_)
            before = len(ctx.edits)
            FunctionRewriter(ctx, pf, frag, function_name(node), scope).top(node)
            ctx.edits[before:] = [e for e in ctx.edits[before:] if astart <= e.start and e.end <= aend]
    # Functions written inside #define bodies.
    for fns in defs.values():
        for fn in fns:
            if fn.file == pf.rel and fn.frag.is_macro:
                scope = Scope(index.program, fn.node, lambda n, f=fn.frag: pf.text(n, f), globals_)
                FunctionRewriter(ctx, pf, fn.frag, fn.name, scope).top(fn.node)


def _is_prototype(node) -> bool:
    for d in node.children_by_field_name("declarator"):
        while d is not None and d.type == "pointer_declarator":
            d = d.child_by_field_name("declarator")
        if d is not None and d.type == "function_declarator":
            return True
    return False


def _rewrite_prototypes(ctx: Context, protos, files, defs) -> None:
    """Prototypes follow their narrowed definitions."""
    for name, idxs in ctx.walker_params.items():
        def_vars = {v.index: v.name for fn in defs.get(name, []) for v in fn.params}
        for proto in protos.get(name, []):
            pf = files[proto.file]
            for p in proto.params:
                if p.index not in idxs:
                    continue
                tnode = p.decl.child_by_field_name("type")
                text = pf.text(p.decl, proto.frag)
                ttext = pf.text(tnode, proto.frag)
                rest = text[len(ttext):] if text.startswith(ttext) else text
                new_name = ctx.renames.get((name, def_vars.get(p.index, "")))
                if new_name and p.name:
                    rest = re.sub(rf"\b{re.escape(p.name)}\b", new_name, rest, count=1)
                start = p.decl.start_byte + proto.frag.offset
                ctx.edits.append(Edit(proto.file, start, p.decl.end_byte + proto.frag.offset,
                                      f"struct {ctx.rules.types['walker']}" + rest, (NARROW_PARAM,),
                                      f"{name}() takes a walker", text, pf.src.count(b"\n", 0, start) + 1))

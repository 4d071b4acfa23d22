"""The lint engine: findings for a kernel tree or for the added lines of patches.

Two sources of findings, both declared in rules/lint.toml:
- index references (KVM001-KVM004): the index already says what each name
  is (an old kvm_vcpu_arch member, a field of struct kvm_mmu, a type), so a
  rule only selects by kind, layout and use;
- shapes the index does not track (KVM010-KVM020): translations through a
  walker, the nested-fault test, calls to functions narrowed to struct
  kvm_pagewalk.  These read the syntax tree of the few files whose text
  contains the trigger name, with the index's typer (refactor.index.program).

A patch is indexed from its post-image (the whole patched file when --tree
has it, else its hunks at their new line numbers) and only findings on
added lines are kept.
"""
from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from refactor.frontend.ctype import StructTable
from refactor.index.indexer import Index, Reference, detect_layout, index_sources, scan_tree
from refactor.frontend.lexer import tokens
from refactor.lint.carried import hunk_lines
from refactor.lint.registry import HANDLERS, LintRule, LintRules, handler, load_lint_rules
from refactor.frontend.parse import ParsedFile, parse
from refactor.rules import RulesError, WalkerNames
from refactor.index.program import Program, squash
from refactor.frontend.patch import FilePatch, Patch, parse_patches


@dataclass
class Finding:
    rule: str
    name: str
    severity: str
    file: str
    line: int
    column: int  # 1-based, as compilers print it
    message: str
    help: str
    expression: str
    function: str | None = None
    fix: str | None = None  # suggested replacement of `expression` ("" = delete the statement)
    patch: str | None = None  # label of the patch (patches only)
    fingerprint: str = ""
    symbol: str | None = None  # the name the rule matched (not in the output: carried.py's key)

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None and k != "symbol"}


@dataclass
class Unit:
    """What one lint run looks at: a tree, or the files of one patch."""

    label: str
    layout: str
    names: WalkerNames
    references: list[Reference]
    program: Program
    read: object  # rel -> bytes | None
    parsed: dict[str, ParsedFile] = field(default_factory=dict)
    only_lines: dict[str, set[int]] | None = None  # a patch: its added lines
    typed: bool = True  # False: a patch read without its tree (judge untyped bases by shape)
    patch: str | None = None
    edits: list | None = None  # old-layout tree: refactor.plan.rewrite's planned edits (the fixes)
    # A patch: per file, (first line, last line, function of git's hunk heading) of each hunk.
    sections: dict[str, list[tuple[int, int, str | None]]] = field(default_factory=dict)
    # Function -> roles of the walkers its body names (from the tree): the walker it works with.
    function_walkers: dict[str, frozenset[str]] = field(default_factory=dict)
    covered_edits: set[int] = field(default_factory=set)  # planned edits already reported by a rule
    moving: bool = False  # a patch for a tree that still has the old layout (old, or a move half done)
    _src: dict[str, bytes | None] = field(default_factory=dict)
    _lines: dict[str, list[bytes]] = field(default_factory=dict)

    def source(self, rel: str) -> bytes | None:
        if rel not in self._src:
            self._src[rel] = self.read(rel)
        return self._src[rel]

    def parsed_file(self, rel: str) -> ParsedFile | None:
        if rel not in self.parsed:
            src = self.source(rel)
            if src is None:
                return None
            self.parsed[rel] = parse(rel, src)
        return self.parsed[rel]

    def line_text(self, rel: str, line: int) -> str:
        lines = self._lines.get(rel)
        if lines is None:  # split once per file: per finding it was quadratic in a patch's size
            lines = self._lines[rel] = (self.source(rel) or b"").split(b"\n")
        return lines[line - 1].decode("utf-8", "replace") if 0 < line <= len(lines) else ""

    def wanted(self, rel: str, line: int) -> bool:
        return self.only_lines is None or line in self.only_lines.get(rel, ())


# ---- walker names ---------------------------------------------------------

def names_for(lint: LintRules, spec: str | None, walkers: list[str], refs: list[Reference],
              text_hint: str = "") -> WalkerNames:
    """Walker names: --names, else the tree's (by preset, else by pairing), else a preset in the text.

    Pairing: layout.toml gives root_mmu's walker role (gva) and guest_mmu's
    (ngpa); a walker named on the same line as one of them (7.3's
    `__kvm_mmu_create(vcpu, &vcpu->arch.root_mmu, &vcpu->arch.gva_walk)`)
    takes that role.
    """
    rules = lint.rules
    if spec:
        return rules.names(spec)
    if walkers:
        for preset in rules.presets.values():
            if {preset.gva, preset.ngpa} == set(walkers):
                return preset
        by_line = defaultdict(set)
        for r in refs:
            if r.context == "code":
                by_line[(r.file, r.line)].add(r.symbol)
        roles: dict[str, str] = {}
        for syms in by_line.values():
            named = syms & set(walkers)
            for member in syms & set(rules.vcpu_old):
                role = rules.vcpu_old[member].walker
                if role and len(named) == 1 and rules.vcpu_old[member].kind == "mmu":
                    roles.setdefault(role, next(iter(named)))
        if set(roles) == set(rules.roles) and roles["gva"] != roles["ngpa"]:
            return WalkerNames(gva=roles["gva"], ngpa=roles["ngpa"], preset=None)
        raise RulesError(f"cannot tell which of the tree's walkers ({', '.join(walkers)}) is which: "
                         "give --names gva=NAME,ngpa=NAME")
    for preset in rules.presets.values():
        if re.search(rf"\b{preset.gva}\b", text_hint) and re.search(rf"\b{preset.ngpa}\b", text_hint):
            return preset
    return rules.names("upstream")


# ---- findings from index references --------------------------------------

def _is_mmu_type(type_text: str | None, lint: LintRules) -> bool:
    return bool(type_text) and type_text.split()[:2] == ["struct", lint.rules.types["mmu"]]


def _strip(expr: str) -> str:
    expr = squash(expr)
    while expr.startswith("(") and expr.endswith(")"):
        expr = expr[1:-1]
    return expr


def _base_word(ref: Reference, unit: Unit) -> str | None:
    """The last name of the base of a member access (`w` in `(w)->cpu_role`)."""
    if ref.base is not None:
        parts = re.split(r"->|\.", _strip(ref.base))
        return parts[-1].strip("()&*") if parts else None
    src = unit.source(ref.file) or b""
    m = re.search(rb"(\w+)\s*\)?\s*(?:->|\.)\s*$", src[max(0, ref.start - 80):ref.start])
    return m.group(1).decode() if m else None


def _on_mmu(ref: Reference, unit: Unit, lint: LintRules) -> bool:
    """Is the base of this field reference a struct kvm_mmu?"""
    if ref.use == "member-declaration":
        return _is_mmu_type(ref.base_type, lint)
    if ref.base_type is not None:
        return _is_mmu_type(ref.base_type, lint)
    # Untyped: a base that is itself a new-layout name (a walker, mmu->w, w->fmt) is not an MMU.
    word = _base_word(ref, unit)
    rules = lint.rules
    if word is not None and word in (set(rules.new_member_names(unit.names)) | {unit.names.gva, unit.names.ngpa}):
        return False
    if word is not None and re.fullmatch(r"\w+", word):
        # Text the parser could not type: the nearest declaration of the base above it.
        src = unit.source(ref.file) or b""
        decls = re.findall(rb"struct\s+(\w+)\s*\*+\s*" + word.encode() + rb"\s*[;=,)]", src[:ref.start])
        if decls:
            return decls[-1].decode() == rules.types["mmu"]
    if ref.via == "token" or ref.base is None:
        return unit.layout == "old"  # the index saw a member access in unreadable text
    base = _strip(ref.base).lstrip("&")
    if not rules.base_for(base).generic:
        return True  # vcpu->arch.mmu / root_mmu / guest_mmu / walk_mmu / nested_mmu
    return unit.layout == "old" or (not unit.typed and base in lint.settings.mmu_pointer_names)


def _ref_matches(rule: LintRule, ref: Reference, unit: Unit, lint: LintRules) -> bool:
    m = rule.match
    if "pattern" in m or ref.context != "code" or ref.use == "text":
        return False
    if m.get("kind") and ref.kind != m["kind"]:
        return False
    rules = lint.rules
    if m.get("removed") and not (ref.symbol in rules.vcpu_old and rules.vcpu_old[ref.symbol].removed):
        return False
    if "type" in m and ref.symbol != rules.types[m["type"]]:
        return False
    if "dest" in m:
        f = rules.mmu_fields.get(ref.symbol)
        if f is None or f.dest != m["dest"]:
            return False
        if m.get("renamed") and f.path == f.name:
            return False
    if m.get("base") == "mmu" and not _on_mmu(ref, unit, lint):
        return False
    return True


def _ref_fix(rule: LintRule, ref: Reference, unit: Unit, lint: LintRules) -> str | None:
    fix, names, rules = rule.fix, unit.names, lint.rules
    if "expr" in fix:
        return lint.expr_new(fix["expr"], names)
    if ref.use == "member-declaration":
        if ref.kind == "vcpu_member":
            return lint.member_fix(ref.symbol, names)
        return f"move to {lint.field_destination(ref.symbol)}" if ref.symbol in rules.mmu_fields else None
    if fix.get("field"):
        if ref.base is None:
            # Read by the lexer only: the base is the word before `->`/`.` in the text.
            word = _base_word(ref, unit)
            src = unit.source(ref.file) or b""
            if word is None:
                return None
            return lint.field_fix(word, ref.symbol, names, src[:ref.start].rstrip().endswith(b"->"))
        arrow = "->" in ref.expression[len(ref.base):len(ref.base) + 4]
        return lint.field_fix(ref.base, ref.symbol, names, arrow, ref.known_target)
    if not fix.get("by_use"):
        return None
    expr = ref.expression
    if ref.via == "token":
        m = re.search(rf"\w+(?:->|\.)arch\.{ref.symbol}\b", expr)
        if not m:
            return None
        expr = m.group()
    if rules.base_for(expr).generic:
        return None
    line = unit.line_text(ref.file, ref.line)
    use = ref.use
    after = re.search(re.escape(expr) + r"\s*(->|\.)\s*(\w+)", line)
    if ref.via == "token":
        # Text the parser could not read: take the use from the line itself.
        use = ("write" if re.search(re.escape(expr) + r"\s*=[^=]", line)
               else "base" if after else "address" if re.search(r"&\s*" + re.escape(expr), line) else "read")
    if use == "write" and fix.get("write"):
        return lint.expr_new(fix["write"], names)
    if use in ("compare", "address"):
        cmp = lint.compare_rule(rule, line)
        if cmp:
            return lint.expr_new(cmp, names)
    if use == "base" and after and after.group(2) in rules.mmu_fields:
        fname = after.group(2)
        access = expr + after.group(1) + fname
        if (fix.get("builder_field") and not rules.mmu_fields[fname].moves_to_walker
                and re.search(re.escape(access).replace("\\.", "\\s*\\.\\s*") + r"[\w.>\s-]*=[^=]", line)):
            return lint.expr_new(fix["builder_field"], names)
        return lint.field_fix(expr, fname, names, after.group(1) == "->")
    if use == "address":
        return lint.pointer_fix("&" + expr, names)
    member = rules.vcpu_old[ref.symbol]
    # The old member was a pointer (walk_mmu): its value becomes a pointer to the walker.
    return lint.pointer_fix(expr, names) if member.kind.endswith("pointer") else names.fill(rules.base_for(expr).new)


def _fix_text(fix: str | None) -> str:
    if fix is None:
        return "see rules/mappings.toml"
    fix = fix.strip("\n")
    if "\n" in fix:
        fix = fix.split("\n", 1)[0] + " ..."
    return f"`{fix}`" if fix else "delete the statement"


def _finding(rule: LintRule, unit: Unit, file: str, line: int, column: int, expr: str,
             function: str | None, fix: str | None, values: dict[str, str]) -> Finding:
    values = {**unit.names.as_dict(), "expr": expr, "fix": _fix_text(fix), **values}
    template = rule.old_message if unit.layout == "old" and rule.old_message else rule.message
    return Finding(rule=rule.id, name=rule.name, severity=rule.severity, file=file, line=line,
                   column=column, message=rule.render(template, values),
                   help=rule.render(rule.help, values), expression=expr, function=function,
                   fix=fix, patch=unit.patch, symbol=values.get("symbol"))


def reference_findings(unit: Unit, lint: LintRules) -> list[Finding]:
    rules = [r for r in lint.items if not r.patterns and r.applies(unit.layout)]
    by_file: dict[str, list] = defaultdict(list)
    for e in unit.edits or []:
        by_file[e.file].append(e)
    covered = unit.covered_edits
    out = []
    for ref in unit.references:
        if ref.context != "code" or not unit.wanted(ref.file, ref.line) or _bridge(ref, unit, lint):
            continue
        for rule in rules:
            if _ref_matches(rule, ref, unit, lint):
                fix = _ref_fix(rule, ref, unit, lint)
                expr = ref.expression if ref.via == "tree" else ref.symbol
                # On an old-layout tree the rewriter's own edit is the fix: same rules, whole statement.
                edit = next((e for e in by_file.get(ref.file, ()) if e.old and e.start <= ref.start
                             and ref.end <= e.end), None)
                if edit is not None:
                    covered.add(id(edit))
                    expr, fix = " ".join(edit.old.split())[:200], _edit_new(edit)
                out.append(_finding(rule, unit, ref.file, ref.line, ref.column + 1, expr,
                                    ref.function, fix, {"symbol": ref.symbol}))
                break
    return out


def _bridge(ref: Reference, unit: Unit, lint: LintRules) -> bool:
    """A removed vCPU member reached for its walker (`vcpu->arch.nested_mmu.w`) in a patch
    for a tree that still has the member: code of a move in progress, valid only while both
    layouts are there (the old layout has no walker to reach), and the patch removing the
    member rewrites it.  In a patch for the new layout it is reported as any other use."""
    rules = lint.rules
    if not unit.moving or ref.kind != "vcpu_member" \
            or ref.symbol not in rules.vcpu_old or not rules.vcpu_old[ref.symbol].removed:
        return False
    walker = [n for n, f in rules.new_fields.items() if rules.types["walker"] in f.type]
    after = (unit.source(ref.file) or b"")[ref.end:ref.end + 40].decode("utf-8", "replace")
    return bool(walker) and re.match(rf"\s*(?:\.|->)\s*(?:{'|'.join(walker)})\b", after) is not None


@handler("rewrite-site")
def rewrite_sites(shapes, rules: list[LintRule]) -> None:
    """Planned edits of an old-layout tree that no reference rule reported (run after them)."""
    unit = shapes.unit
    for e in unit.edits or []:
        if id(e) in unit.covered_edits or not unit.wanted(e.file, e.line):
            continue
        src = unit.source(e.file) or b""
        line = src.count(b"\n", 0, e.start) + 1
        col = e.start - (src.rfind(b"\n", 0, e.start) + 1) + 1
        shapes.out.append(_finding(rules[0], unit, e.file, line, col, " ".join(e.old.split())[:200], None,
                                   _edit_new(e), {"edit_rule": e.rule, "why": e.why}))


def _edit_new(edit) -> str:
    from refactor.plan.edits import DROP

    return "" if edit.new == DROP else edit.new


def unit_findings(unit: Unit, lint: LintRules) -> list[Finding]:
    from refactor.lint.shapes import Shapes

    out = reference_findings(unit, lint)
    shapes = Shapes(unit, lint)
    # Each pattern's handler, in the order lint.toml declares the rules (later ones see earlier findings).
    patterns = list(dict.fromkeys(p for r in lint.items if r.applies(unit.layout) for p in r.patterns))
    for pattern in patterns:
        HANDLERS[pattern](shapes, [r for r in lint.with_pattern(pattern) if r.applies(unit.layout)])
    out += shapes.out
    seen: set[tuple] = set()
    unique = []
    for f in out:  # one finding per rule and site, whichever way it was found
        key = (f.rule, f.file, f.line, f.column)
        if key not in seen:
            seen.add(key)
            unique.append(f)
    unique.sort(key=lambda f: (f.patch or "", f.file, f.line, f.column, f.rule))
    return fingerprint(unique, unit)


def function_walkers(references: list[Reference], names: WalkerNames, rules=None) -> dict[str, frozenset[str]]:
    """Function -> roles of the vcpu walkers its body names (code only).

    In a tree the move is half done in, a removed member that stands for a walker
    (layout.toml: walk_mmu, nested_mmu are the {gva} tables) names that walker too:
    `w = nested ? &vcpu->arch.{ngpa} : vcpu->arch.walk_mmu->w` works with both walkers.
    """
    roles = {names.gva: "gva", names.ngpa: "ngpa"}
    if rules is not None:
        roles.update({m.name: m.walker for m in rules.vcpu_old.values() if m.removed and m.walker})
    found: dict[str, set[str]] = defaultdict(set)
    for r in references:
        if r.context == "code" and r.function and r.symbol in roles:
            found[r.function].add(roles[r.symbol])
    return {fn: frozenset(v) for fn, v in found.items()}


def fingerprint(findings: list[Finding], unit: Unit) -> list[Finding]:
    """Stable across line shifts: rule, file, function, the line's text, and its occurrence."""
    seen: dict[str, int] = defaultdict(int)
    for f in findings:
        # Not the expression: a tree's finding may show the rewriter's whole statement, a patch's the reference.
        body = "\0".join([f.rule, f.file, f.function or "", squash(unit.line_text(f.file, f.line))])
        h = hashlib.sha1(body.encode()).hexdigest()[:16]
        seen[h] += 1
        f.fingerprint = f"{h}:{seen[h]}"
    return findings


# ---- entry points -------------------------------------------------------

def lint_tree(root: str | Path, names: str | None = None, use_cache: bool = True,
              index: Index | None = None, lint: LintRules | None = None,
              warnings: list[str] | None = None) -> tuple[Index, list[Finding]]:
    """Findings for a tree; problems that do not stop the lint are appended to `warnings`."""
    lint = lint or load_lint_rules()
    index = index or scan_tree(root, lint.rules, use_cache=use_cache)
    wn = names_for(lint, names, index.walkers, index.references)
    base = Path(root)
    edits, error = None, None
    if index.layout == "old" and lint.with_pattern("rewrite-site"):
        # What the move will change is what the rewriter plans: ask it (it needs syntax trees).
        from refactor.index.indexer import build_index
        from refactor.plan.rewrite import plan_rewrite

        if not index.files:
            index = build_index(root, lint.rules)
        try:
            edits = plan_rewrite(root, names or "upstream", lint.rules, index=index).edits
        except Exception as exc:  # noqa: BLE001 - the plan only refines fixes; lint still reports
            error = f"rewrite plan unavailable ({type(exc).__name__}: {exc}); fixes from rules/mappings.toml"

    def read(rel: str) -> bytes | None:
        pf = index.files.get(rel)
        if pf is not None:
            return pf.src
        try:
            return (base / rel).read_bytes()
        except OSError:
            return None

    unit = Unit(label=str(root), layout=index.layout, names=wn, references=index.references,
                program=index.program, read=read, parsed=dict(index.files), edits=edits,
                function_walkers=function_walkers(index.references, wn, lint.rules))
    if error and warnings is not None:
        warnings.append(error)
    return index, unit_findings(unit, lint)


def _copy_program(program: Program) -> Program:
    structs = StructTable({k: dict(v) for k, v in program.structs.members.items()}, dict(program.structs.where))
    return Program(structs=structs, functions=dict(program.functions))


def _patch_layout(patch: Patch, lint: LintRules) -> str:
    """Old when the patch's pre-image (context and removed lines) uses old-layout names only,
    mixed when it uses both (a move half done), else new."""
    rules = lint.rules
    old_names = {n for n, v in rules.vcpu_old.items() if v.removed} | {rules.types["old_format"]}
    new_names = set(rules.new_member_names()) - set(rules.new_fields) | {rules.types["walker"],
                                                                          rules.types["format"]}
    pre = "\n".join(fp.pre_image_text() for fp in patch.files).encode()
    seen = {t.name for t in tokens(pre, old_names | new_names) if t.context == "code"}
    if seen & old_names:
        return "mixed" if seen & new_names else "old"
    return "new"


def lint_patches(text: str, name: str, tree: Index | None = None, tree_root: str | Path | None = None,
                 names: str | None = None, lint: LintRules | None = None) -> list[Finding]:
    """Findings on the added lines of every patch in `text` (an mbox or a diff)."""
    lint = lint or load_lint_rules()
    patches = parse_patches(text, name)
    state: dict[str, str | None] = {}  # patched files so far, so a series applies in order
    wn = names_for(lint, names, tree.walkers if tree else [], tree.references if tree else [], text)
    walkers_of = function_walkers(tree.references, wn, lint.rules) if tree is not None else {}
    out: list[Finding] = []
    for patch in patches:
        files: dict[str, bytes] = {}
        added: dict[str, set[int]] = {}
        sections: dict[str, list[tuple[int, int, str | None]]] = {}
        originals: dict[str, str | None] = {}
        for fp in patch.files:
            content = _post_image(fp, state, tree_root, originals)
            if fp.binary or fp.new_path is None or not fp.new_path.endswith((".c", ".h")):
                continue
            lines = fp.added()
            if not lines:
                continue
            files[fp.new_path] = content if content is not None else fp.post_image_sparse()
            # A hunk may apply a few lines off: its added lines are where they landed.
            added[fp.new_path] = _landed(fp, content) if content is not None else set(lines)
            if content is None:  # only hunks: a line's function may be known from git's heading only
                sections[fp.new_path] = [(h.new_start, h.new_start + max(h.new_len, 1) - 1,
                                          _heading_function(h.section)) for h in fp.hunks]
        if not files:
            continue
        memory = index_sources(files, lint.rules, program=_copy_program(tree.program) if tree is not None else None)
        program, parsed, refs = memory.program, memory.files, memory.references
        layout = tree.layout if tree is not None else _patch_layout(patch, lint)
        if tree is None and layout == "new":
            layout = "new" if detect_layout(program, lint.rules, refs) != "mixed" else "mixed"
        unit = Unit(label=patch.label, layout=layout, names=wn, references=refs, program=program,
                    read=files.get, parsed=parsed, only_lines=added,
                    typed=tree is not None and not sections,  # a file the tree could not give: hunks only
                    sections=sections, function_walkers=walkers_of,
                    patch=patch.label if len(patches) > 1 or patch.subject else None,
                    moving=(tree.layout if tree is not None else _patch_layout(patch, lint)) in ("old", "mixed"))
        found = unit_findings(unit, lint)
        if found:
            found = _not_carried(found, patch, unit, originals, tree, lint)
        out += found
    return out


def _not_carried(found: list[Finding], patch: Patch, unit: Unit, originals: dict[str, str | None],
                 tree: Index | None, lint: LintRules) -> list[Finding]:
    """The findings of `unit` (added lines) that the patch's removed lines did not already have."""
    from refactor.lint.carried import drop_carried, pre_image_sparse, removed_lines

    files, removed, renamed, sections = {}, {}, {}, {}
    for fp in patch.files:
        if fp.binary or fp.old_path is None or fp.new_path is None or not fp.old_path.endswith((".c", ".h")):
            continue
        original = originals.get(fp.old_path)
        lines = removed_lines(fp, original)
        if not lines:
            continue
        files[fp.old_path] = original.encode() if original is not None else pre_image_sparse(fp)
        removed[fp.old_path] = lines
        renamed[fp.old_path] = fp.new_path
        if fp.new_path in unit.sections:
            sections[fp.old_path] = [(h.old_start, h.old_start + max(h.old_len, 1) - 1,
                                      _heading_function(h.section)) for h in fp.hunks]
    if not files:
        return found
    memory = index_sources(files, lint.rules, program=_copy_program(tree.program) if tree is not None else None)
    before = Unit(label=unit.label, layout=unit.layout, names=unit.names, references=memory.references,
                  program=memory.program, read=files.get, parsed=memory.files, only_lines=removed,
                  typed=unit.typed, sections=sections, function_walkers=unit.function_walkers, patch=unit.patch,
                  moving=unit.moving)
    return drop_carried(found, unit_findings(before, lint), renamed)


def _landed(fp: FilePatch, content: bytes) -> set[int]:
    """Line numbers of the added lines in the patched file (hunks found as apply_to finds them)."""
    found = hunk_lines(fp, content.decode("utf-8", "replace"), "+")
    return set(fp.added()) if found is None else found


def _heading_function(section: str) -> str | None:
    """The function named in git's hunk heading (`static gpa_t f(struct kvm_vcpu *vcpu,` -> f)."""
    m = re.search(r"\b([A-Za-z_]\w*(?:\(\w+\))?)\s*\(", section or "")
    return m.group(1) if m else None


def _post_image(fp: FilePatch, state: dict[str, str | None], tree_root,
                originals: dict[str, str | None] | None = None) -> bytes | None:
    """The whole patched file when its pre-image is known (tree or earlier patch), else None.

    `originals` gets the pre-image (old path -> text, None when unknown)."""
    if fp.binary:
        return None
    key = fp.old_path
    original: str | None
    if key is None:
        original = ""
    elif key in state:
        original = state[key]
    elif tree_root is not None:
        from refactor.frontend.source import read_tree_file

        data = read_tree_file(tree_root, key)  # the path is the patch's: confined to the tree
        original = data.decode("utf-8", "replace") if data is not None else None
    else:
        original = None
    if originals is not None and key is not None:
        originals[key] = original
    result = fp.apply_to(original) if original is not None else None
    if result is None and original and key not in state and fp.applied_in(original):
        result = original  # the tree already has the change (a pre-commit hook's work tree)
        if originals is not None:
            originals[key] = None  # so the pre-image is only what the hunks show
    if fp.old_path is not None and fp.old_path != fp.new_path:
        state.pop(fp.old_path, None)
    if fp.new_path is not None:
        state[fp.new_path] = result
    return result.encode() if result is not None else None

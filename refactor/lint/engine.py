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
added lines are kept.  The units and findings are refactor/lint/findings.py,
the reference rules refactor/lint/references.py, the shapes
refactor/lint/shapes.py; this module runs them on trees and patches.
"""
from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from refactor.frontend.ctype import StructTable
from refactor.frontend.lexer import tokens
from refactor.frontend.patch import FilePatch, Patch, parse_patches
from refactor.index.indexer import Index, Reference, detect_layout, index_sources, scan_tree
from refactor.index.program import Program
from refactor.lint.carried import hunk_lines
from refactor.lint.findings import Finding, Unit, fingerprint, function_walkers
from refactor.lint.references import reference_findings
from refactor.lint.registry import HANDLERS, LintRules, load_lint_rules
from refactor.rules import RulesError, WalkerNames

# Finding and Unit live in refactor/lint/findings.py; imported from here by older callers.
__all__ = ["Finding", "Unit", "function_walkers", "lint_patches", "lint_tree", "names_for", "unit_findings"]


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

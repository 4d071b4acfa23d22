"""Findings from the index's references (KVM001-KVM004, and KVM100's planned edits).

The index already says what each name is (an old kvm_vcpu_arch member, a
field of struct kvm_mmu, a type), so a rule only selects by kind, layout and
use; the fix comes from rules/ (refactor/lint/registry.py), or on an
old-layout tree from the rewriter's own edit of the site.
"""
from __future__ import annotations

import re
from collections import defaultdict

from refactor.index.indexer import Reference
from refactor.lint.findings import Finding, Unit, bare_expr, is_mmu_type, make_finding
from refactor.lint.registry import LintRule, LintRules, handler


def _base_word(ref: Reference, unit: Unit) -> str | None:
    """The last name of the base of a member access (`w` in `(w)->cpu_role`)."""
    if ref.base is not None:
        parts = re.split(r"->|\.", bare_expr(ref.base))
        return parts[-1].strip("()&*") if parts else None
    src = unit.source(ref.file) or b""
    m = re.search(rb"(\w+)\s*\)?\s*(?:->|\.)\s*$", src[max(0, ref.start - 80):ref.start])
    return m.group(1).decode() if m else None


def _on_mmu(ref: Reference, unit: Unit, lint: LintRules) -> bool:
    """Is the base of this field reference a struct kvm_mmu?"""
    if ref.use == "member-declaration":
        return is_mmu_type(ref.base_type, lint)
    if ref.base_type is not None:
        return is_mmu_type(ref.base_type, lint)
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
    base = bare_expr(ref.base).lstrip("&")
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
                out.append(make_finding(rule, unit, ref.file, ref.line, ref.column + 1, expr,
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
        shapes.out.append(make_finding(rules[0], unit, e.file, line, col, " ".join(e.old.split())[:200],
                                       None, _edit_new(e), {"edit_rule": e.rule, "why": e.why}))


def _edit_new(edit) -> str:
    from refactor.plan.edits import DROP

    return "" if edit.new == DROP else edit.new

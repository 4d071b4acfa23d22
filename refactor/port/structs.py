"""Struct definitions across the layout change, for a backport.

The new layout declares what the old one does not have: struct kvm_pagewalk
itself, the MMU's walker member, the page format's permission fields, the
walker members of struct kvm_vcpu_arch, and the forward declaration the
walker needs.  The old layout still declares, in struct kvm_mmu and struct
kvm_vcpu_arch, what the new one moved or removed (layout.toml `mmu_fields`
with dest = "walker", `vcpu_arch.old` members marked removed).  Read from a
hunk of a header: which of its lines have no old counterpart (`drop`: in the
pre-image they are not looked for, added ones are not written) and which
removed lines the old layout keeps (`stay`).  Comments and blank lines go with
the declaration they belong to.
"""
from __future__ import annotations

import re

from refactor.frontend.patch import Hunk
from refactor.port.lexicon import NARROW, Vocabulary

_OPEN = re.compile(r"^struct\s+(\w+)\s*\{")
_NAME = re.compile(r"\(\s*\*\s*(\w+)\s*\)\s*\(|(\w+)\s*(?:\[[^\]]*\]\s*)*;")
_STRUCT_DECL = re.compile(r"^\s*struct\s+(\w+)\s*(\*?)\s*(\w+)\s*;")


def _comment(text: str) -> bool:
    return text.strip().startswith(("/*", "*"))


def _statements(lines: list[tuple[str, str, int]]) -> list[list[int]]:
    """Indexes of the lines of each declaration: consecutive lines of one tag up to `;`."""
    out, cur = [], []
    for i, (tag, text, _) in enumerate(lines):
        if cur and lines[cur[0]][0] != tag:
            out.append(cur)
            cur = []
        if not cur and (not text.strip() or _comment(text)):
            continue
        cur.append(i)
        code = re.sub(r"/\*.*?\*/|//.*", "", text).rstrip()
        if code.endswith((";", "{", "}")):
            out.append(cur)
            cur = []
    if cur:
        out.append(cur)
    return out


def struct_lines(hunk: Hunk, vocab: Vocabulary) -> dict[int, tuple]:
    """Hunk line index -> ("drop" | "stay", rule id) for the lines of struct definitions
    that the old layout lacks or keeps, or ("rename", rule id, old name) for an added
    declaration of an MMU field under the name the new layout gave it."""
    rules = vocab.rules
    t = rules.types
    lines = hunk.lines
    moved = {f.name: f"field-{f.name}" for f in rules.mmu_fields.values() if f.moves_to_walker}
    # Fields the new layout put in the page format (path fmt.permissions): the old format lacks them.
    in_format = {f.path.split(".", 1)[1]: f"field-{f.name}" for f in rules.mmu_fields.values()
                 if f.moves_to_walker and "." in f.path}
    removed = {n for n, m in rules.vcpu_old.items() if m.removed}
    renamed = {path: (name, rule) for name, path, rule in vocab.mmu_renames()}
    # The walker's members that the old struct kvm_mmu had (under their own name or as `fmt`).
    walker_known = set(moved) | {f.path.split(".")[0] for f in rules.mmu_fields.values() if f.moves_to_walker}
    new_members = {(vocab.names.gva, "layout-gva"), (vocab.names.ngpa, "layout-ngpa")}
    scope_of: list[str | None] = []
    scope = None
    m = _OPEN.match(hunk.section.strip())
    if m:
        scope = m.group(1)
    for tag, text, _ in lines:
        o = _OPEN.match(text)
        if o:
            scope = o.group(1)
            scope_of.append(scope)
            continue
        scope_of.append(scope)
        if text.startswith("}"):
            scope = None
    out: dict[int, tuple[str, str]] = {}
    stmts = _statements(lines)
    # (scope, field) -> tags of its declarations: a field declared on both sides is only
    # retyped or reworded in place, not moved.
    declared: dict[tuple, set[str]] = {}
    for idx in stmts:
        name = _NAME.search(re.sub(r"/\*.*?\*/", "", " ".join(lines[i][1] for i in idx)))
        if name:
            declared.setdefault((scope_of[idx[0]], name.group(1) or name.group(2)), set()).add(lines[idx[0]][0])
    for k, idx in enumerate(stmts):
        tag = lines[idx[0]][0]
        text = " ".join(lines[i][1] for i in idx)
        scope = scope_of[idx[0]]
        decision = None
        o = _OPEN.match(lines[idx[0]][1])
        d = _STRUCT_DECL.match(text)
        if o and o.group(1) == t["walker"] or scope == t["walker"] and (tag == " " or lines[idx[0]][1].startswith("}")):
            decision = ("drop", NARROW)
        elif scope == t["walker"]:
            name = _NAME.search(re.sub(r"/\*.*?\*/", "", text))
            name = name and (name.group(1) or name.group(2))
            if name in walker_known:
                decision = ("drop", moved.get(name, NARROW))
            else:
                # A member the refactor did not move there: the old layout would need it in
                # struct kvm_mmu, which is a decision for a human.
                decision = ("conflict", f"the patch {'adds' if tag == '+' else 'removes'} `{name}` "
                            f"{'to' if tag == '+' else 'from'} struct {t['walker']}, which the old layout "
                            f"does not have: make the change to struct {t['mmu']} by hand")
        elif scope is None and re.fullmatch(rf"\s*struct\s+{t['mmu']}\s*;\s*", text):
            # The walker's forward declaration of the MMU (its gva_to_gpa takes one).
            later = [lines[j[0]][1] for j in stmts[k + 1:k + 2]]
            if later and _OPEN.match(later[0]) and _OPEN.match(later[0]).group(1) == t["walker"]:
                decision = ("drop", NARROW)
        elif scope in (t["mmu"], t["vcpu_arch"], t["format"]):
            name = _NAME.search(re.sub(r"/\*.*?\*/", "", text))
            name = name and (name.group(1) or name.group(2))
            walker_typed = d is not None and d.group(1) == t["walker"]
            if scope == t["format"] and name in in_format:
                decision = ("drop", in_format[name])
            elif scope == t["mmu"] and tag == "+" and name in renamed:
                decision = ("rename", renamed[name][1], renamed[name][0])
            elif scope == t["mmu"] and walker_typed and name == vocab.walker_member:
                first = next(iter(rules.restructure.get("attach_walker", [])), None)
                decision = ("drop", first.id if first else NARROW)
            elif scope == t["mmu"] and name in moved and tag != " " and len(declared[(scope, name)]) == 1:
                decision = ("stay", moved[name]) if tag == "-" else ("drop", moved[name])
            elif scope == t["vcpu_arch"] and walker_typed and name in dict(new_members):
                decision = ("drop", dict(new_members)[name])
            elif scope == t["vcpu_arch"] and name in removed and tag == "-":
                decision = ("stay", next((b.id for b in vocab.member_bases()
                                          if b.old.endswith(f".{name}")), NARROW))
        if decision is None or decision[0] == "stay" and tag != "-":
            continue
        for i in idx:
            out[i] = decision
        # The comment just above a declaration is its own.
        i = idx[0] - 1
        while i >= 0 and lines[i][0] == tag and lines[i][1].strip() and _comment(lines[i][1]):
            out[i] = decision
            i -= 1
    # Blank lines go with the declaration next to them (same tag), and a removed one that
    # followed a declaration the old layout keeps stays with it.
    for i, (tag, text, _) in enumerate(lines):
        if text.strip() or i in out:
            continue
        if tag == " ":
            if i > 0 and out.get(i - 1, ("",))[0] == "drop" and lines[i - 1][1].startswith("}"):
                out[i] = out[i - 1]     # the blank line after a struct the old layout lacks
            continue
        near = [j for j in (i - 1, i + 1) if 0 <= j < len(lines) and lines[j][0] == tag and j in out]
        if tag != " " and near:
            out[i] = out[near[0]]
            continue
        j = i - 1
        while j >= 0 and (j in out and out[j][0] == "drop" or not lines[j][1].strip() and j not in out):
            j -= 1
        if tag == "-" and j >= 0 and out.get(j, ("",))[0] == "stay":
            out[i] = out[j]
    return out


def moved_declarations(tlines: list[str], vocab: Vocabulary) -> set[int]:
    """Lines of an old-layout file that declare what the new layout moved or removed: inside
    struct kvm_mmu a field that went to the walker, inside struct kvm_vcpu_arch a member
    that went (with the comment above it and the blank line after it).  The new layout's
    context does not show them there."""
    t = vocab.rules.types
    gone = {t["mmu"]: {f.name for f in vocab.rules.mmu_fields.values() if f.moves_to_walker},
            t["vcpu_arch"]: {n for n, m in vocab.rules.vcpu_old.items() if m.removed}}
    out: set[int] = set()
    names, cur = None, []
    for i, line in enumerate(tlines):
        if _OPEN.match(line):
            names, cur = gone.get(_OPEN.match(line).group(1)), []
            continue
        if names is None:
            continue
        if line.startswith("}"):
            names = None
            continue
        if not line.strip() or _comment(line):
            continue
        cur.append(i)
        if re.sub(r"/\*.*?\*/|//.*", "", line).rstrip().endswith(";"):
            name = _NAME.search(re.sub(r"/\*.*?\*/", "", " ".join(tlines[j] for j in cur)))
            if name and (name.group(1) or name.group(2)) in names:
                out.update(cur)
                j = cur[0] - 1
                while j > 0 and _comment(tlines[j]):
                    out.add(j)
                    j -= 1
                if i + 1 < len(tlines) and not tlines[i + 1].strip() and not tlines[j].strip():
                    out.add(i + 1)
            cur = []
    return out

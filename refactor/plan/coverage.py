"""Never silent: every code occurrence of a name the layout moves is an edit or a human site.

The lexer finds every occurrence of every tracked name (refactor.index);
the planner edits the ones it can read and type.  This pass compares the
two: an occurrence of a removed vcpu-arch member, of a struct kvm_mmu field
that moves (to the walker, or to a new path), or of the old format type, that
no edit touched and no rule explains, becomes a `file:line: why` for a human
(rewrite exit 3), so a diff that does not build can never come with exit 0.
Unknown members of the tree's own struct kvm_mmu are reported here too: once
at their declaration, and at each use.
"""
from __future__ import annotations

import re

from refactor.frontend.lexer import LineIndex, tokens
from refactor.index.layout_files import already_new, unplaced_members  # noqa: F401  (re-exported)
from refactor.plan.edits import Edit, Human
from refactor.rules import Rules, WalkerNames


def moved_names(rules: Rules) -> dict[str, str]:
    """name -> what became of it, for every name the layout change removes or moves."""
    out = {n: f"vcpu-arch member {n} is removed" for n, m in rules.vcpu_old.items() if m.removed}
    for n, f in rules.mmu_fields.items():
        if f.dest == "walker":
            out[n] = f"struct {rules.types['mmu']} field {n} moves to the walker as {f.path}"
        elif f.path != n:
            out[n] = f"struct {rules.types['mmu']} field {n} becomes {f.path}"
    if rules.types["old_format"] != rules.types["format"]:
        out[rules.types["old_format"]] = (f"struct {rules.types['old_format']} becomes "
                                          f"struct {rules.types['format']}")
    return out


def _needs_edit(ref, rules: Rules, names: dict[str, str]) -> bool:
    if ref.context != "code" or ref.symbol not in names:
        return False
    if ref.via == "token":
        return True  # the parser could not read it: nothing proves it is not ours
    if ref.kind == "vcpu_member":
        return True
    if ref.kind == "type":
        return ref.symbol == rules.types["old_format"]
    if ref.kind == "mmu_field":
        if ref.use == "member-declaration":
            return ref.base_type == f"struct {rules.types['mmu']}"
        if ref.base_type is not None and rules.types["walker"] in ref.base_type:
            return False  # already reached through a walker
        return not already_new(ref, rules)
    return False  # locals of the same name, fields of other structs, new-layout names


def _macro_param_base(ref) -> bool:
    """`(mmu)->cpu_role` in a #define body: the expansion sites are what is typed and edited."""
    if ref.region != "macro" or ref.base is None:
        return False
    base = ref.base.strip().strip("()").strip()
    return base.isidentifier() and ref.function is not None and ref.function.startswith("#define")


def uncovered(index, edits: list[Edit], rules: Rules, narrowed: list[str],
              extra_edits: list[Edit] = ()) -> list[Human]:
    """Human sites for occurrences of moved names that no edit touches."""
    names = moved_names(rules)
    spans: dict[str, list[tuple[int, int]]] = {}
    for e in list(edits) + list(extra_edits):
        spans.setdefault(e.file, []).append((e.start, e.end))
    for lst in spans.values():
        lst.sort()
    walker_vars = {tuple(n.split(":", 1)) for n in narrowed}
    out: list[Human] = []
    seen: set[tuple[str, int, str]] = set()
    for ref in index.references:
        if not _needs_edit(ref, rules, names):
            continue
        lo = ref.start
        if ref.via == "tree" and ref.expression and ref.kind == "mmu_field" \
                and ref.use != "member-declaration":
            lo = min(lo, ref.end - len(ref.expression.encode()))  # the whole `base->field`
        if _touched(spans.get(ref.file, []), lo, ref.end):
            continue
        if ref.kind == "mmu_field" and ref.base is not None and \
                (ref.function, ref.base.strip()) in walker_vars:
            continue  # the base variable itself became a walker
        if _macro_param_base(ref):
            continue
        key = (ref.file, ref.line, ref.symbol)
        if key in seen:
            continue
        seen.add(key)
        where = ("the parser could not read this code (read by the lexer only)"
                 if ref.via == "token" else "no rule rewrote this use")
        out.append(Human(ref.file, ref.line, f"{names[ref.symbol]}, but {where}: "
                                             f"`{ref.expression.strip()[:80]}`", ref.expression[:120]))
    return out


def _touched(spans: list[tuple[int, int]], lo: int, hi: int) -> bool:
    """Some edit overlaps [lo, hi), or inserts text inside it."""
    return any(s < hi and (e > lo or (s == e and s >= lo)) for s, e in spans)


def unplaced(index, rules: Rules) -> list[Human]:
    """Each unplaced member once at its declaration, and each use of it."""
    fields, members = unplaced_members(index.program, rules)
    out: list[Human] = []
    hint = "say where it goes in a rules file (layout.toml [mmu_fields], see docs/rules-overlay.md)"
    mmu = f"struct {rules.types['mmu']}"
    for ref in index.references:
        if ref.context != "code" or ref.symbol not in fields or ref.kind != "mmu_field":
            continue
        if ref.use == "member-declaration":
            if ref.base_type == mmu:
                out.append(Human(ref.file, ref.line, f"{mmu} member {ref.symbol} is not placed by "
                                 f"rules/ (walker or MMU?): {hint}", ref.expression[:120]))
        else:
            out.append(Human(ref.file, ref.line, f"use of {mmu} member {ref.symbol}, which rules/ "
                             f"does not place: `{ref.expression.strip()[:80]}`", ref.expression[:120]))
    if members:
        arch = f"struct {rules.types['vcpu_arch']}"
        for rel, pf in sorted(index.files.items()):
            lines = LineIndex(pf.src)
            for tok in tokens(pf.src, frozenset(members)):
                if tok.context != "code":
                    continue
                line = lines.position(tok.start)[0]
                out.append(Human(rel, line, f"{arch} member {tok.name} (an MMU or walker) is not "
                                 f"placed by rules/ (layout.toml [vcpu_arch.old]): {hint}"))
    return out


# `<prefix>arch.<member>-><field>` in text the parser could not read: the base's
# type is known from the member (layout.toml), so the rules apply to the tokens.
_ARCH_ACCESS = re.compile(
    rb"(?P<prefix>[A-Za-z_][\w.>-]*?(?:->|\.)arch(?:\.|->))(?P<member>[A-Za-z_]\w*)"
    rb"[ \t]*(?P<op>->|\.)[ \t]*(?P<field>[A-Za-z_]\w*)")


def token_edits(index, rules: Rules, names: WalkerNames, edits: list[Edit],
                narrowed: list[str] = ()) -> list[Edit]:
    """Edits, by token rules, in regions only the lexer read, where the base's type is known:
    `vcpu->arch.MEMBER->FIELD` (from the member), `mmu->FIELD` where the function declares
    `struct kvm_mmu *mmu` and keeps it, and the old format type."""
    out: list[Edit] = []
    done: set[tuple[str, int]] = set()
    moved = moved_names(rules)
    for ref in index.references:
        if ref.context != "code" or ref.via != "token" or ref.symbol not in moved:
            continue
        pf = index.files.get(ref.file)
        if pf is None:
            continue
        lo = pf.src.rfind(b"\n", 0, ref.start) + 1
        hi = pf.src.find(b"\n", ref.end)
        hi = len(pf.src) if hi < 0 else hi
        typed = _declared_edit(pf.src, ref, rules, names, narrowed, lo, hi)
        if typed is not None and (ref.file, typed.start) not in done and \
                not any(e.file == ref.file and e.start < typed.end and typed.start < e.end for e in edits):
            done.add((ref.file, typed.start))
            out.append(typed)
            continue
        for m in _ARCH_ACCESS.finditer(pf.src, lo, hi):
            start, end = m.start(), m.end()
            if not (start <= ref.start < end) or (ref.file, start) in done:
                continue
            new = _token_access(m, rules, names)
            if new is None:
                continue
            if any(e.file == ref.file and e.start < end and start < e.end for e in edits):
                continue
            done.add((ref.file, start))
            old = m.group().decode()
            member = m.group("member").decode()
            base = rules.base_for(f"vcpu->arch.{member}")
            line = pf.src.count(b"\n", 0, start) + 1
            out.append(Edit(ref.file, start, end, new, base.id,
                            f"token rule (the parser could not read this code): {base.why}", old, line))
    return out


def _token_access(m, rules: Rules, names: WalkerNames) -> str | None:
    member, fld = m.group("member").decode(), m.group("field").decode()
    info = rules.vcpu_old.get(member)
    f = rules.mmu_fields.get(fld)
    if info is None or f is None:
        return None
    prefix = m.group("prefix").decode()
    arch = prefix[:-1] if prefix.endswith(".") else prefix[:-2]  # `vcpu->arch`
    op = m.group("op").decode()
    if f.dest == "walker":
        base = rules.base_for(f"vcpu->arch.{member}")
        new_base = names.fill(base.new, base="{base}")
        if new_base.startswith("vcpu->arch"):
            new_base = arch + new_base[len("vcpu->arch"):]
        return f"{new_base}{'->' if base.new_is == 'ptr' else '.'}{f.path}"
    if info.removed:
        return None  # a builder field of a removed member: only a human knows
    if f.path != fld:
        return f"{prefix}{member}{op}{f.path}"
    return None


def blocked_walker_params(defs, blocked: dict, rules: Rules) -> dict[tuple[str, int], str]:
    """(function, parameter index) -> why, for struct kvm_mmu * parameters that read walker
    fields but cannot be narrowed.  A walk-only MMU (nested_mmu) passed there must not become
    the builder the rules name for it (root_mmu): that would walk L1's tables for L2."""
    walker_fields = set(rules.walker_fields())
    out: dict[tuple[str, int], str] = {}
    for name, fns in defs.items():
        for fn in fns:
            for v in fn.params:
                if v.index is None or (name, v.name) not in blocked:
                    continue
                for use in v.uses:
                    parent = use.parent
                    while parent is not None and parent.type == "parenthesized_expression":
                        parent = parent.parent
                    if parent is not None and parent.type == "field_expression" and \
                            parent.child_by_field_name("field") is not None and \
                            parent.child_by_field_name("field").text.decode() in walker_fields:
                        out[(name, v.index)] = blocked[(name, v.name)]
                        break
    return out


_PTR_ACCESS = re.compile(rb"(?<![\w.>])(?P<var>[A-Za-z_]\w*)[ \t]*->[ \t]*(?P<field>[A-Za-z_]\w*)")
_HEADER_NAME = re.compile(rb"([A-Za-z_]\w*)\s*\((?:[^()]|\([^()]*\))*\)\s*\Z")


def _declared_edit(src: bytes, ref, rules: Rules, names: WalkerNames, narrowed, lo: int,
                   hi: int) -> Edit | None:
    """A token rule from a declaration: the old format type, or `var->FIELD` on a declared
    struct kvm_mmu * the function keeps (a narrowed one is left to a human)."""
    if ref.symbol == rules.types["old_format"]:
        m = re.compile(rb"\bstruct\s+" + re.escape(ref.symbol.encode()) + rb"\b").search(src, lo, hi)
        if m is None or not (m.start() <= ref.start < m.end()):
            return None
        rule = rules.expr("rsvd-bits-validate-type")
        return Edit(ref.file, m.start(), m.end(), f"struct {rules.types['format']}", rule.id,
                    f"token rule (the parser could not read this code): {rule.why}",
                    m.group().decode(), src.count(b"\n", 0, m.start()) + 1)
    f = rules.mmu_fields.get(ref.symbol)
    if f is None or not f.moves_to_walker:
        return None
    for m in _PTR_ACCESS.finditer(src, lo, hi):
        if m.start("field") != ref.start:
            continue
        var = m.group("var")
        body = src.rfind(b"\n{", 0, ref.start)
        if body < 0 or var == b"arch":
            return None
        header = src[max(0, body - 600):body]
        decl = re.compile(rb"\bstruct\s+" + re.escape(rules.types["mmu"].encode()) + rb"\s*\*\s*"
                          + re.escape(var) + rb"\b")
        if not decl.search(src, max(0, body - 600), ref.start):
            return None
        fn = _HEADER_NAME.search(header.rstrip())
        if fn is None or f"{fn.group(1).decode()}:{var.decode()}" in narrowed:
            return None  # a walker now, perhaps renamed: a human's
        base = rules.base_for("{base}")
        sep = "->" if base.new_is == "ptr" else "."
        new = f"{names.fill(base.new, base=var.decode())}{sep}{f.path}"
        return Edit(ref.file, m.start(), m.end(), new, base.id,
                    f"token rule (the parser could not read this code): {base.why}",
                    m.group().decode(), src.count(b"\n", 0, m.start()) + 1)
    return None

"""The layout vocabulary of a port, derived from rules/ (never written here).

A port translates lines of C between the two layouts.  Everything it knows
about the layouts comes from the same rule objects the rewriter uses:

- mappings.toml `bases`: what an old MMU expression becomes as a walker
  (`vcpu->arch.walk_mmu` <-> `vcpu->arch.{gva}`, `X` <-> `X->w`, ...);
- layout.toml `mmu_fields`: where each field of the old struct kvm_mmu went
  (`permissions` <-> walker `fmt.permissions`, `shadow_zero_check` <-> MMU
  `fmt`, ...) and the types (`struct rsvd_bits_validate` <-> `struct
  kvm_page_format`, `struct kvm_mmu *` <-> `struct kvm_pagewalk *`);
- mappings.toml `exprs` and `calls`: statements that disappear
  (`walk-mmu-assign`) and calls that change function on a walker.

Each translation step records the rule id it used, for the port's report.
Which variables are walkers and which are MMUs is decided from declarations
(the patch's own hunks, and the target function), not from spelling.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from refactor.port.calls import argument_spans, call_of
from refactor.rules import Rules, WalkerNames, cite

NARROW = cite("narrow-local")          # struct kvm_pagewalk * <-> struct kvm_mmu *
WALKER_NAMES = cite("walker-names")    # the same layout under other walker names

_IDENT = r"[A-Za-z_]\w*"
# A C lvalue chain: a, a->b, a.b, a->b.c ... (no calls, no indexing).
_CHAIN = rf"{_IDENT}(?:(?:->|\.){_IDENT})*"
_DECL = re.compile(r"\bstruct\s+(\w+)\s*\*\s*(?:const\s+)?(\w+)\b")


def _word(s: str) -> str:
    """A regex for `s` standing alone (not inside a longer identifier or chain)."""
    lead = r"(?<![\w>.])" if re.match(r"\w", s) else ""
    tail = r"(?!\w)" if re.search(r"\w$", s) else ""
    return lead + re.escape(s) + tail


@dataclass
class Translation:
    text: str
    rules: list[str] = field(default_factory=list)
    dropped: bool = False   # the whole statement disappears in the target layout


@dataclass(frozen=True)
class Vocabulary:
    """The names one side of a port uses (walker names come from --names or the tree)."""

    rules: Rules
    names: WalkerNames

    # ---- what the rules say, per direction -------------------------------------
    @property
    def walker_type(self) -> str:
        return self.rules.types["walker"]

    @property
    def mmu_type(self) -> str:
        return self.rules.types["mmu"]

    def walker_paths(self) -> list[tuple[str, str, str]]:
        """(old field, new path, rule) for fields that moved to the walker; longest path first."""
        out = [(f.name, f.path, f"field-{f.name}") for f in self.rules.mmu_fields.values()
               if f.moves_to_walker]
        return sorted(out, key=lambda t: -len(t[1]))

    def mmu_renames(self) -> list[tuple[str, str, str]]:
        """(old field, new path, rule) for MMU fields that stayed but were renamed."""
        return [(f.name, f.path, f"field-{f.name}") for f in self.rules.mmu_fields.values()
                if not f.moves_to_walker and f.path != f.name]

    def member_bases(self) -> list:
        """mappings.toml bases that name a kvm_vcpu_arch member (not the generic {base})."""
        return [b for b in self.rules.bases if not b.generic]

    @property
    def walker_member(self) -> str:
        """struct kvm_mmu's pointer to its walker, as mappings.toml's generic base names it
        (`{base}->w`)."""
        generic = next(b for b in self.rules.bases if b.generic)
        return generic.new.rsplit("->", 1)[-1]

    def old_markers(self) -> set[str]:
        gone = {n for n, m in self.rules.vcpu_old.items() if m.removed}
        fields = {f.name for f in self.rules.mmu_fields.values()
                  if f.moves_to_walker and f.path != f.name or (not f.moves_to_walker and f.path != f.name)}
        return gone | fields | {self.rules.types["old_format"]}

    def new_markers(self) -> set[str]:
        return {self.names.gva, self.names.ngpa, self.rules.types["walker"], self.rules.types["format"]}


def declared_types(lines: list[str], vocab: Vocabulary) -> dict[str, str]:
    """Variable -> 'walker', 'mmu' or 'format' from `struct T *name` declarations in `lines`."""
    out: dict[str, str] = {}
    formats = (vocab.rules.types["format"], vocab.rules.types["old_format"])
    for line in lines:
        for m in _DECL.finditer(line):
            if m.group(1) == vocab.walker_type:
                out[m.group(2)] = "walker"
            elif m.group(1) == vocab.mmu_type:
                out[m.group(2)] = "mmu"
            elif m.group(1) in formats:
                out[m.group(2)] = "format"
    return out


def _substituter(t: Translation, used: list[str]):
    """sub(pattern, repl, rule): rewrite t.text, recording the rule ids ("a+b": both) it used."""
    def sub(pattern: str, repl, rule: str) -> None:
        new = re.sub(pattern, repl, t.text)
        if new != t.text:
            t.text = new
            used.extend(rule.split("+"))
    return sub


def _ptr_form(member_kind: str, expr: str) -> str:
    # Pointer members (walk_mmu, mmu) are values already; MMU objects need '&'.
    return expr if member_kind in ("walker_pointer", "mmu_pointer") else f"&{expr}"


# ---- new layout -> old layout (backport) -------------------------------------------

def _drop_call_arg(text: str, function: str, is_walker) -> str:
    """`text` with the last argument of each call of `function` on it removed where that
    argument is a walker (`is_walker`) and the call's parentheses close on the same line."""
    out, pos = [], 0
    m = call_of(text, function)
    while m:
        got = argument_spans(text, m.end() - 1)
        if got and len(got[0]) > 1 and is_walker(text[got[0][-1][0]:got[0][-1][1]].strip()):
            out.append(text[pos:got[0][-2][1]])
            pos = got[1]
        m = call_of(text, function, max(m.end(), pos))
    return "".join(out) + text[pos:]


def _attach_walker_back(line: str, vocab: Vocabulary, types: dict[str, str]) -> tuple[str | None, str | None]:
    """restructure.toml [[attach_walker]] / [[attach_member]] inverted: the MMU's walker
    member (`mmu->w = w;`, `vcpu->arch.nested_mmu.w = ...;`) has no old counterpart, so its
    assignment goes (returns (None, rule)); the walker parameter of the MMU-creating function
    and the argument its calls pass go too (returns (new line, rule))."""
    rules = vocab.rules
    w = re.escape(vocab.walker_member)
    m = re.match(rf"^\s*({_CHAIN})(?:->|\.){w}\s*=[^=].*;\s*$", line)
    if m:
        for r in rules.restructure.get("attach_member", []):
            if re.search(rf"(?:->|\.){re.escape(r.params['member'])}$", m.group(1)):
                return None, r.id
        first = next(iter(rules.restructure.get("attach_walker", [])), None)
        if first is not None:
            return None, first.id
    for r in rules.restructure.get("attach_walker", []):
        fn = r.params["function"]
        if not re.search(rf"(?<![\w>.]){re.escape(fn)}\s*\(", line):
            continue
        param = r"\s*".join(re.escape(tok) for tok in re.findall(r"\w+|\S", r.params["param"]))
        new = re.sub(rf",\s*{param}\s*\)", ")", line)
        if new == line:
            walkers = {vocab.names.gva, vocab.names.ngpa}

            def is_walker(arg: str) -> bool:
                arg = arg.lstrip("&").strip()
                return (types.get(arg) == "walker" or re.fullmatch(rf"{_CHAIN}(?:->|\.){w}", arg) is not None
                        or re.fullmatch(r"vcpu->arch\.(\w+)", arg) is not None
                        and arg.rsplit(".", 1)[1] in walkers)
            new = _drop_call_arg(line, fn, is_walker)
        if new != line:
            return new, r.id
    return line, None


def to_old(line: str, vocab: Vocabulary, types: dict[str, str]) -> Translation:
    """A new-layout line in old-layout terms (before local names are matched to the target)."""
    rules, names = vocab.rules, vocab.names
    t = Translation(line)
    used: list[str] = []
    sub = _substituter(t, used)

    new, rule = _attach_walker_back(line, vocab, types)
    if new is None:
        t.dropped, t.rules = True, [rule]
        return t
    if rule:
        t.text = new
        used.append(rule)

    # restructure.toml [[locals]] own_name: a local named like a vCPU walker holds that walker
    # (struct kvm_pagewalk *ngpa_walk = &vcpu->arch.ngpa_walk;).  Where the patch does not show
    # its declaration, it is read as the walker itself.
    own = next((r for r in rules.restructure.get("locals", []) if r.params.get("kind") == "own_name"), None)
    for name in (names.gva, names.ngpa) if own else ():
        if name in types or re.search(rf"\*\s*{name}\s*[=;,)]", t.text):
            continue
        sub(rf"(?<![\w>.&]){name}\s*->", f"vcpu->arch.{name}.", own.id)
        sub(rf"(?<![\w>.&]){name}(?![\w.]|\s*->)", f"&vcpu->arch.{name}", own.id)

    # 0. Whole expressions that mappings.toml restated (the nested tests): back to their
    #    old form.  In these templates `w` (new) and `mmu` (old) stand for any variable.
    for expr in rules.exprs:
        if not expr.new or "EXPR" in expr.old or not re.search(r"\{(gva|ngpa)\}", expr.new):
            continue
        pat = r"\s*".join(re.escape(tok) for tok in re.findall(r"->|\w+|\S", names.fill(expr.new)))
        pat = re.sub(r"(?<![\w>.])w(?!\w)", r"(?P<var>[A-Za-z_]\\w*)", pat, count=1)
        old = re.sub(r"^mmu(?!\w)", r"\\g<var>", expr.old) if "(?P<var>" in pat else expr.old
        sub(pat, old, expr.id)

    # 1. Walker members of kvm_vcpu_arch back to the old member that stood for them.
    #    The first base listed for a walker wins (walk_mmu for {gva}): it is the
    #    old name of "the tables of the running level".
    seen: set[str] = set()
    for base in vocab.member_bases():
        new = names.fill(base.new)
        if base.new_is != "obj" or new in seen:
            continue
        seen.add(new)
        member = base.old.rsplit(".", 1)[-1].rsplit(">", 1)[-1]
        vm = rules.vcpu_old.get(member)
        kind = vm.kind if vm else "mmu"
        old_ptr = _ptr_form(kind, base.old)
        arrow_or_dot = "->" if kind in ("walker_pointer", "mmu_pointer") else "."
        for old_f, path, frule in vocab.walker_paths():
            sub(_word(f"{new}.{path}"), f"{base.old}{arrow_or_dot}{old_f}", f"{base.id}+{frule}")
        sub(r"&\s*" + _word(new), old_ptr, base.id)
        sub(_word(new), base.old if kind not in ("walker_pointer", "mmu_pointer") else f"(*{base.old})",
            base.id)

    # 2. X->w->path / X.w->path / X->w: the MMU's walker is the old MMU itself.
    generic = next(b for b in rules.bases if b.generic)
    w = re.escape(vocab.walker_member)
    for old_f, path, frule in vocab.walker_paths():
        sub(rf"({_CHAIN})->{w}->{re.escape(path)}(?!\w)", rf"\1->{old_f}", f"{generic.id}+{frule}")
        sub(rf"({_CHAIN})\.{w}->{re.escape(path)}(?!\w)", rf"\1.{old_f}", f"{generic.id}+{frule}")
    sub(rf"&\s*({_CHAIN})\.{w}(?![\w.]|->)", r"&\1", generic.id)
    sub(rf"({_CHAIN})\.{w}(?![\w.]|->)", r"&\1", generic.id)
    sub(rf"({_CHAIN})->{w}(?![\w.]|->)", r"\1", generic.id)

    # 3. Fields through variables whose type the declarations tell.
    for var, kind in types.items():
        if kind == "walker":
            for old_f, path, frule in vocab.walker_paths():
                sub(rf"(?<![\w>.]){re.escape(var)}->{re.escape(path)}(?!\w)", f"{var}->{old_f}", frule)
        elif kind == "mmu":
            for old_f, path, frule in vocab.mmu_renames():
                sub(rf"(?<![\w>.]){re.escape(var)}->{re.escape(path)}(?!\w)", f"{var}->{old_f}", frule)
    # An MMU reached through a vcpu member keeps its renamed fields too.
    for old_f, path, frule in vocab.mmu_renames():
        sub(rf"(vcpu->arch\.(?:{'|'.join(n for n, m in rules.vcpu_old.items() if not m.removed)})"
            rf"(?:->|\.)){re.escape(path)}(?![\w.])", rf"\1{old_f}", frule)

    # 4. Types.
    sub(_word(f"struct {rules.types['format']}"), f"struct {rules.types['old_format']}",
        "rsvd-bits-validate-type")
    sub(_word(f"struct {rules.types['walker']}"), f"struct {rules.types['mmu']}", NARROW)

    t.rules = list(dict.fromkeys(used))
    return t


# ---- old layout -> new layout (forward port) ---------------------------------------

def dropped_by(line: str, rules: Rules) -> str | None:
    """The rule under which an old statement has no counterpart (walk-mmu-assign; a builder
    field written on the walk-only MMU), or None."""
    for expr in rules.exprs:
        if expr.new or "= EXPR;" not in expr.old:
            continue
        lhs = expr.old.split("=", 1)[0].strip()
        # FIELD: a builder field, or a member of one (root_role.invalid).
        m = re.match(r"\s*" + re.escape(lhs).replace("FIELD", r"(\w+)(?:\.\w+)*") + r"\s*=[^=]", line)
        if not m:
            continue
        if "FIELD" in lhs:
            f = rules.mmu_fields.get(m.group(1))
            if f is None or f.moves_to_walker:   # only fields the builder keeps had no reader
                continue
        return expr.id
    return None


def restated_tests(rules, names) -> list[tuple[str, str, str]]:
    """(pattern, replacement, rule id) of the tests mappings.toml `exprs` restates as a whole
    (`vcpu->arch.walk_mmu == &vcpu->arch.nested_mmu` -> `vcpu->arch.mmu ==
    &vcpu->arch.guest_mmu`): comparisons of members only, no variable standing for any
    (templates such as `mmu != vcpu->arch.walk_mmu` are not taken here)."""
    out = []
    for e in rules.exprs:
        if not e.new or not re.search(r"[=!]=", e.old) or re.search(r"\b(?:EXPR|FIELD)\b", e.old):
            continue
        free = [m for m in re.finditer(r"(?<![\w>.])([A-Za-z_]\w*)(?!\w)(?!\s*(?:->|\.))", e.old)]
        if free:
            continue
        for op in ("==", "!="):        # the rule's test, and its negation
            old, new = (x.replace("==", op) if "==" in e.old else x for x in (e.old, names.fill(e.new)))
            pat = r"\s*".join(re.escape(tok) for tok in re.findall(r"->|[=!]=|\w+|\S", old))
            out.append((rf"(?<![\w>.]){pat}(?!\w)", new, e.id))
    return out


def to_new(line: str, vocab: Vocabulary, types: dict[str, str]) -> Translation:
    """An old-layout line in new-layout terms.  `types`: old variables known to be walkers
    in the target ('walker'), MMUs that stay ('mmu') or page formats ('format')."""
    rules, names = vocab.rules, vocab.names
    t = Translation(line)
    used: list[str] = []
    sub = _substituter(t, used)

    gone = dropped_by(line, rules)
    if gone:
        t.dropped, t.rules = True, [gone]
        return t

    for pattern, repl, rule in restated_tests(rules, names):    # 0. the nested tests, restated
        sub(pattern, repl.replace("\\", r"\\"), rule)
    # 1. Fields reached through a kvm_vcpu_arch member, and the removed members themselves.
    for base in vocab.member_bases():
        member = base.old.rsplit(".", 1)[-1].rsplit(">", 1)[-1]
        vm = rules.vcpu_old.get(member)
        if vm is None:
            continue
        ptr = vm.kind in ("walker_pointer", "mmu_pointer")
        acc = "->" if ptr else r"\."
        for old_f, _path, frule in vocab.walker_paths():
            sub(rf"{re.escape(base.old)}{acc}{re.escape(old_f)}(?!\w)",
                rules.walker_access(base.old, old_f, names), f"{base.id}+{frule}")
        if vm.removed:
            if ptr:
                sub(_word(base.old), rules.walker_pointer(base.old, names), base.id)
            else:
                sub(r"&\s*" + re.escape(base.old) + r"(?!\w)", rules.walker_pointer(base.old, names),
                    base.id)
                sub(_word(base.old), names.fill(base.new), base.id)
    for old_f, path, frule in vocab.mmu_renames():
        sub(rf"(vcpu->arch\.\w+(?:->|\.)){re.escape(old_f)}(?!\w)", rf"\1{path}", frule)

    # 2. Fields through variables: a walker in the target reaches them directly, an MMU
    #    that stays through its walker.
    for var, kind in types.items():
        if kind == "format":
            continue
        for old_f, path, frule in vocab.walker_paths():
            repl = f"{var}->{path}" if kind == "walker" else f"{var}->{vocab.walker_member}->{path}"
            sub(rf"(?<![\w>.]){re.escape(var)}->{re.escape(old_f)}(?!\w)", repl, frule)
        for old_f, path, frule in vocab.mmu_renames():
            sub(rf"(?<![\w>.]){re.escape(var)}->{re.escape(old_f)}(?!\w)", f"{var}->{path}", frule)
        if kind == "walker":
            sub(rf"\bstruct\s+{rules.types['mmu']}\s*\*(\s*){re.escape(var)}\b",
                rf"struct {rules.types['walker']} *\1{var}", NARROW)
            for call in rules.calls:
                sub(rf"\b{re.escape(call.function)}\(\s*{re.escape(var)}\s*\)", f"{call.new}({var})",
                    call.id)

    # 3. Types.
    sub(_word(f"struct {rules.types['old_format']}"), f"struct {rules.types['format']}",
        "rsvd-bits-validate-type")
    t.rules = list(dict.fromkeys(used))
    return t


def rename(line: str, src: WalkerNames, dst: WalkerNames) -> Translation:
    """Same layout, other walker names (a patch on the first posting's names onto upstream's)."""
    t = Translation(line)
    for role in ("gva", "ngpa"):
        a, b = getattr(src, role), getattr(dst, role)
        if a != b:
            new = re.sub(rf"(?<!\w){re.escape(a)}(?!\w)", b, t.text)
            if new != t.text:
                t.text = new
                t.rules.append(WALKER_NAMES)
    return t


def translate(line: str, direction: str, vocab: Vocabulary, types: dict[str, str],
              other: WalkerNames | None = None) -> Translation:
    """`line` in the target's terms.  backport: vocab is the patch's; forward: the target's;
    rename: vocab is the patch's and `other` the target's names."""
    if direction == "backport":
        return to_old(line, vocab, types)
    if direction == "forward":
        return to_new(line, vocab, types)
    if direction == "rename" and other is not None:
        return rename(line, vocab.names, other)
    return Translation(line)

"""Where code the refactor restructured lives on the other layout, from rules/restructure.toml.

A fix written on the new layout inside a function the refactor introduced
(`init_kvm_page_walk()`, `__update_permission_bitmask()`...) has no
line-for-line counterpart on an old tree: its work is done there by other
functions the rule names (`from`, `merge`, `then_mmu`...).  This module
names them with their place in the target and says what the hunk's changed
lines become in each (the walker `w` is the MMU local the old function writes
through), so that a stable maintainer can act on the conflict.  For calls of
a helper the refactor replaced ([[spte_permissions]] `new` for `old`) it
restates the call exactly, so the hunk ports (refactor.port.engine).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from refactor.port.calls import arguments
from refactor.port.lexicon import Vocabulary, declared_types, to_old
from refactor.port.target import Target

_IDENT = re.compile(r"[A-Za-z_]\w*")


def _roles(rules, r: "Restructured") -> dict:
    """restructure.toml [port_roles] of the rule's table: what each of its keys names."""
    return rules.port_roles.get(r.kind, {})


def rule_names(value) -> list[str]:
    if isinstance(value, dict):
        return list(value)          # merge: the old initialiser is the key
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return [value] if isinstance(value, str) else []


@dataclass(frozen=True)
class Restructured:
    """A function a hunk touches that the refactor introduced or re-parameterized."""
    function: str
    kind: str          # the restructure.toml table
    key: str           # the key naming it (to, inner, new, bitmask, rename, function)
    rule_id: str
    params: dict


def new_layout_functions(rules) -> dict[str, Restructured]:
    """Functions only the new layout has (restructure.toml), by name: a patch that defines,
    sits in or calls one is written on the new layout."""
    out: dict[str, Restructured] = {}
    for kind, roles in rules.port_roles.items():
        for r in rules.restructure.get(kind, []):
            for key in roles["introduces"]:
                for name in rule_names(r.params.get(key)):
                    out.setdefault(name, Restructured(name, kind, key, r.id, dict(r.params)))
            for _old, new in (r.params.get("rename") or {}).items():
                out.setdefault(new, Restructured(new, kind, "rename", r.id, dict(r.params)))
    return out


def changed_functions(rules) -> dict[str, Restructured]:
    """Functions both layouts have whose walker parameter the refactor changed."""
    out: dict[str, Restructured] = {}
    for kind, roles in rules.port_roles.items():
        for r in rules.restructure.get(kind, []):
            for key in roles["changes"]:
                names = rule_names(r.params.get(key))
                if names:      # the first is the new layout's name, the others older ones
                    out.setdefault(names[0], Restructured(names[0], kind, key, r.id, dict(r.params)))
    return out


def touched(hunk, function: str | None, rules) -> list[Restructured]:
    """The restructured functions a hunk is in (`function`) or whose calls it changes."""
    new, changed = new_layout_functions(rules), changed_functions(rules)
    out = []
    if function in new:
        out.append(new[function])
    elif function in changed:
        out.append(changed[function])
    words = {w for g, t, _ in hunk.lines if g != " " for w in _IDENT.findall(t)}
    out += [new[w] for w in sorted(words & set(new)) if new[w] not in out and new[w].key != "rename"]
    return out


# ---- the target's side ----------------------------------------------------------------------

@dataclass(frozen=True)
class Place:
    function: str
    file: str
    line: int                  # 1-based line of the definition
    role: str
    local: str | None = None   # its struct kvm_mmu * (parameter or local)
    params: tuple[str, ...] = ()

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def body(target: Target, rel: str, line: int) -> tuple[int, list[str]]:
    """(0-based index of the first line, lines) of the function defined at `line` (1-based)."""
    lines = target.lines(rel)
    start = line - 1
    end = start
    while end < len(lines) and lines[end] != "}":
        end += 1
    return start, lines[start:end + 1]


def place(target: Target, name: str, role: str, rules, prefer: str | None = None) -> Place | None:
    defs = [d for d in target.definitions(name) if d[0].endswith(".c") or d[0] == prefer] \
        or target.definitions(name)
    if not defs:
        return None
    defs.sort(key=lambda d: d[0] != prefer)
    rel, line, _ar = defs[0]
    _s, lines = body(target, rel, line)
    text = "\n".join(lines)
    head = text[:text.find("{")] if "{" in text else text
    params = tuple(m.group(1) for m in re.finditer(r"(\w+)\s*(?:,|\)\s*$)", head.replace("\n", " ")))
    m = re.search(rf"struct\s+{re.escape(rules.types['mmu'])}\s*\*\s*(\w+)", text)
    return Place(name, rel, line, role, m.group(1) if m else None, params)


def counterparts(r: Restructured, target: Target, rules, prefer: str | None = None) -> list[Place]:
    """The target's functions that do what `r.function` does on the new layout."""
    out: list[Place] = []
    roles_of = _roles(rules, r)
    changes = roles_of.get("changes", ())
    if r.key == "rename":
        old = next(o for o, n in r.params["rename"].items() if n == r.function)
        roles = [(old, "the same function under its old name")]
    elif r.key in changes:
        roles = [(n, "the same function, taking the MMU") for n in rule_names(r.params.get(r.key))]
    else:
        roles = [(n, f"`{key}`: {what}") for key, what in roles_of["introduces"][r.key].items()
                 for n in rule_names(r.params.get(key))]
    for name, role in roles:
        p = place(target, name, role, rules, prefer)
        if p and p.function not in {q.function for q in out}:
            out.append(p)
        if p and r.key in changes:
            break             # the first name the target defines is its version of the function
    return out


def callers(r: Restructured, target: Target, rules, prefer: str | None = None) -> list[Place]:
    if r.key != "to":
        return []
    out = []
    for key, what in _roles(rules, r).get("callers", {}).items():
        for n in rule_names(r.params.get(key)):
            p = place(target, n, f"`{key}`: {what}", rules, prefer)
            if p:
                out.append(p)
    return out


# ---- the hunk's lines on the old layout ---------------------------------------------------------

def walker_vars(texts: list[str], vocab: Vocabulary, rules) -> set[str]:
    """Variables the lines use as walkers: declared so, or reaching a walker field."""
    out = {v for v, k in declared_types(texts, vocab).items() if k == "walker"}
    paths = [re.escape(p) for _o, p, _r in vocab.walker_paths()]
    text = "\n".join(texts)
    out |= set(re.findall(rf"(?<![\w>.])(\w+)->(?:{'|'.join(paths)})(?!\w)", text)) if paths else set()
    out -= {"vcpu"}
    return out


def format_vars(texts: list[str], rules) -> set[str]:
    members = {f.path.split(".")[-1] for f in rules.mmu_fields.values() if "." in f.path}
    text = "\n".join(texts)
    return set(re.findall(rf"(?<![\w>.])(\w+)->(?:{'|'.join(map(re.escape, members))})(?!\w)", text)) \
        if members else set()


def old_line(line: str, r: Restructured, p: Place, vocab: Vocabulary, rules, walkers: set[str],
             formats: set[str]) -> str:
    """A changed line of the hunk as it reads in the counterpart `p` of `r.function`."""
    text = line
    if r.kind == "spte_permissions" and r.key == "new":
        return old_calls(text, rules)[0]
    local = p.local or (p.params[r.params.get("param", 0)] if p.params else None)
    if r.kind == "walker_param" and p.params:
        local = p.params[r.params.get("param", 0)]
        cmp = next((n for n, m in rules.vcpu_old.items() if m.compare_as_walker), None)
        for v in walkers:
            if cmp:
                mine = rules.vcpu_old[cmp].walker
                for role in ("gva", "ngpa"):
                    arch = rf"&\s*vcpu->arch\.{re.escape(getattr(vocab.names, role))}\b"
                    same = role == mine
                    text = re.sub(rf"\b{re.escape(v)}\s*==\s*{arch}",
                                  f"{local} {'==' if same else '!='} &vcpu->arch.{cmp}", text)
                    text = re.sub(rf"\b{re.escape(v)}\s*!=\s*{arch}",
                                  f"{local} {'!=' if same else '=='} &vcpu->arch.{cmp}", text)
    text = to_old(text, vocab, {v: "walker" for v in walkers}).text
    if local:
        for v in walkers | formats:
            text = re.sub(rf"(?<![\w>.]){re.escape(v)}(?=\s*->|\s*[,)]|\s*$)", local, text)
    return text


def counterpart_hunk(hunk, r: Restructured, target: Target, rules, vocab: Vocabulary, rel: str):
    """The hunk of `inner` ([[parameterize]]) as the one counterpart that holds its body reads
    it (`fmt->` through the MMU parameter; the role bits are locals of the same names there),
    to be located there like any hunk; None for other restructurings."""
    import dataclasses

    if r.kind != "parameterize" or r.key != "inner":
        return None
    places = counterparts(r, target, rules, rel)
    if len(places) != 1:
        return None
    p = places[0]
    texts = [t for _g, t, _ in hunk.lines] + [hunk.section]
    walkers, formats = walker_vars(texts, vocab, rules), format_vars(texts, rules)
    if not formats:
        return None
    lines = [(g, old_line(t, r, p, vocab, rules, walkers, formats), n) for g, t, n in hunk.lines]
    head = target.lines(p.file)[p.line - 1]
    return dataclasses.replace(hunk, lines=lines, section=head)


def _having_removed(places: list[Place], r: Restructured, changed, target: Target, vocab, rules,
                    walkers, formats) -> list[Place]:
    """The counterparts that have the hunk's first removed line (all when none has it, or the
    hunk only adds): where the change applies."""
    removed = next((t for g, t in changed if g == "-" and t.strip()), None)
    if removed is None:
        return places
    have = []
    for p in places:
        want = " ".join(old_line(removed, r, p, vocab, rules, walkers, formats).split())
        start, lines = body(target, p.file, p.line)
        if any(" ".join(x.split()) == want for x in lines):
            have.append(p)
    return have or places


def _walker_param_note(r: Restructured, p: Place, vocab: Vocabulary, rules) -> str:
    """How the walker parameter reads as the MMU parameter of the old function."""
    i = r.params.get("param", 0)
    if i >= len(p.params):
        return ""
    mmu = p.params[i]
    cmp = next((n for n, m in rules.vcpu_old.items() if m.compare_as_walker), None)
    out = f"; its walker parameter `{r.params.get('name', 'w')}` is the MMU `{mmu}` there"
    if cmp:
        mine = getattr(vocab.names, rules.vcpu_old[cmp].walker)
        other = next(getattr(vocab.names, k) for k in ("gva", "ngpa")
                     if getattr(vocab.names, k) != mine)
        out += (f" (`== &vcpu->arch.{other}` reads `{mmu} != &vcpu->arch.{cmp}`, "
                f"`== &vcpu->arch.{mine}` reads `{mmu} == &vcpu->arch.{cmp}`)")
    return out


def old_calls(line: str, rules) -> tuple[str, str | None]:
    """Calls of a helper the refactor replaced ([[spte_permissions]] `new`, the negation of
    `old` with its arguments per `call`) restated as the old helper: exact, so it ports."""
    for r in rules.restructure.get("spte_permissions", []):
        new, old, call = r.params.get("new"), r.params.get("old"), r.params.get("call", "")
        if not (new and old and re.search(rf"\b{re.escape(new)}\s*\(", line)):
            continue
        slots = [s.strip() for s in call.split(",")]
        order = [int(s[1:-1]) for s in slots if re.fullmatch(r"\{\d+\}", s)]   # old index per new slot
        pos = {i: k for k, i in enumerate(int(s[1:-1]) if re.fullmatch(r"\{\d+\}", s) else -1
                                          for s in slots)}

        def repl(m: re.Match) -> str | None:
            args = arguments(line, m.end() - 1)
            if args is None or len(args[0]) != len(slots):
                return None
            old_args = [args[0][pos[i]].strip() for i in sorted(order)]
            neg = m.group(1) == "!"
            return f"{'' if neg else '!'}{old}({', '.join(old_args)})", args[1]

        out, at = "", 0
        for m in re.finditer(rf"(!\s*)?\b{re.escape(new)}\s*\(", line):
            if m.start() < at:
                continue
            got = repl(m)
            if got is None:
                return line, None
            text, end = got
            out += line[at:m.start()] + text
            at = end
        return out + line[at:], r.id
    return line, None


def reason(rs: list[Restructured], hunk, target: Target, rules, vocab: Vocabulary, rel: str,
           direction: str, function: str | None = None) -> str | None:
    """What a maintainer does with a conflicting hunk in restructured code: the target's
    counterparts with file:line and the hunk's changed lines as each of them reads."""
    if direction != "backport":
        return None
    parts = []
    texts = [t for _g, t, _ in hunk.lines] + [hunk.section]
    walkers, formats = walker_vars(texts, vocab, rules), format_vars(texts, rules)
    changed = [(g, t) for g, t, _ in hunk.lines if g != " "]
    for r in rs:
        places = counterparts(r, target, rules, rel)
        if not places:
            parts.append(f"{r.function}() (restructure.toml {r.rule_id}) has no counterpart the "
                         "target defines")
            continue
        what = ("takes a walker since the refactor" if r.key in _roles(rules, r).get("changes", ())
                else "is a name the refactor gave" if r.key == "rename" else "was introduced by the refactor")
        listed = "; ".join(f"{p.where} {p.function}() [{p.role}]" for p in places)
        text = f"{r.function}() {what} (restructure.toml {r.rule_id}); on the old layout: {listed}"
        up = callers(r, target, rules, rel)
        if up:
            text += "; called from " + ", ".join(f"{p.where} {p.function}() [{p.role}]" for p in up)
        if r.kind == "walker_param":
            text += _walker_param_note(r, places[0], vocab, rules)
        lines = []
        by_text: dict[str, list[str]] = {}
        if r.key == "new" and function != r.function:
            # A caller of the helper: the change stays in the caller, its calls restated.
            user = place(target, function, "the hunk's function", rules, rel) if function else None
            new = ", ".join(f"`{g}{old_calls(t, rules)[0].strip()}`" for g, t in changed if t.strip())
            parts.append(text.replace("on the old layout: ", "on the old layout its calls read ")
                         + f"; make the change in {user.where + ' ' if user else ''}{function}() as: {new}")
            continue
        for p in _having_removed(places, r, changed, target, vocab, rules, walkers, formats):
            if r.key == "bitmask":
                break
            new = ", ".join(f"`{g}{old_line(t, r, p, vocab, rules, walkers, formats).strip()}`"
                            for g, t in changed if t.strip())
            by_text.setdefault(new, []).append(f"{p.function}()")
        for new, where in by_text.items():
            lines.append(f"{new} in {', '.join(where)}")
        if lines:
            text += "; apply the change to each: " + "; ".join(lines)
        parts.append(text)
    return "; ".join(parts) if parts else None


"""What a ported hunk needs that the target lacks: the prerequisites a stable maintainer
would have to backport first (an identifier the target never defines, a member no struct
of the target has, a function the target defines with another number of parameters)."""
from __future__ import annotations

import re

from refactor.port.target import Target, arity

_IDENT = re.compile(r"[A-Za-z_]\w*")
_FUNC_HEAD = re.compile(r"([A-Za-z_]\w*)\s*\(")
C_WORDS = frozenset(
    "auto break case char const continue default do double else enum extern float for goto if inline "
    "int long register restrict return short signed sizeof static struct switch typedef union unsigned "
    "void volatile while bool true false NULL typeof __always_inline".split())


_MEMBER = re.compile(r"(?:->|\.)\s*([A-Za-z_]\w*)")


def missing_names(lines: list[str], target: Target, ctx) -> list[str]:
    """Members and functions a conflicting hunk uses that the target never names: the
    prerequisite a stable maintainer would have to backport first (`cpu_role` on 5.10)."""
    text = re.sub(r'"(?:\\.|[^"\\])*"|/\*.*?\*/|//.*', "", "\n".join(lines))
    known = target.identifiers() | ctx.defined_by_patch | C_WORDS
    # Layout names are translated by now: a member still unknown to the target (cpu_role on
    # 5.10) is one it predates.
    out = [f"`{m}` is not a member of any struct of the target"
           for m in dict.fromkeys(_MEMBER.findall(text)) if m not in known]
    out += [f"{f}() is not defined in the target" for f in dict.fromkeys(_FUNC_HEAD.findall(text))
            if f not in known and f not in ctx.words]
    return out[:4]


def prerequisites(added_t: list[str], target: Target, ctx) -> list[str]:
    text = "\n".join(added_t)
    idents = set(_IDENT.findall(re.sub(r'"(?:\\.|[^"\\])*"|/\*.*?\*/|//.*', "", text)))
    known = target.identifiers()
    out = []
    for ident in sorted(idents - known - C_WORDS - ctx.defined_by_patch):
        # Locals the patch declares itself are fine.
        if re.search(rf"[\w\*\s]\s\**{re.escape(ident)}\s*(=|;|\[|,\s*\w)", text) and not \
                re.search(rf"\b{re.escape(ident)}\s*\(", text):
            continue
        if re.search(rf"\b{re.escape(ident)}\s*:", text):  # a label
            continue
        out.append(f"`{ident}` is not defined in the target")
    for m in _FUNC_HEAD.finditer(text):
        name = m.group(1)
        if name in C_WORDS or name in ctx.defined_by_patch:
            continue
        defs = target.definitions(name)
        arities = {a for _f, _l, a in defs if a is not None}
        if len(arities) != 1:
            continue
        got = arity(text, m.end() - 1)
        want = next(iter(arities))
        if got is not None and got != want:
            f, line, _ = defs[0]
            out.append(f"{name}() takes {want} arguments in the target ({f}:{line}), "
                       f"the patch passes {got}")
    return list(dict.fromkeys(out))


def format_members(added_t: list[str], target: Target, rules, types: dict[str, str]) -> list[str]:
    """Members of the old page format (struct rsvd_bits_validate) that translated added lines
    read but the target's struct lacks: the permission bitmap and PKRU mask live in the new
    layout's struct kvm_page_format, in the old one in struct kvm_mmu itself."""
    old = rules.types["old_format"]
    head = f"struct {old} {{"
    body = None
    for rel in ["arch/x86/include/asm/kvm_host.h"] + sorted(target.files):
        text = target.text(rel) or ""
        at = text.find(head)
        if at >= 0:
            body = text[at:text.find("\n};", at)]
            break
    if body is None:
        return []
    have = set(_IDENT.findall(body))
    # Old MMU fields of the format's type: those the new layout turned into a format member.
    dotted = [f.path.split(".") for f in rules.mmu_fields.values() if "." in f.path]
    holders = {f.name for f in rules.mmu_fields.values() if f.path in {p[0] for p in dotted}}
    holders |= {v for v, k in types.items() if k == "format"}
    members = {p[-1] for p in dotted}
    text = "\n".join(added_t)
    out = []
    for m in re.finditer(r"(\w+)(?=\s*(?:->|\.)\s*(\w+))", text):
        if m.group(1) in holders and m.group(2) in members and m.group(2) not in have:
            out.append(f"`{m.group(2)}` is not a member of struct {old} in the target: "
                       f"the old layout has it in struct {rules.types['mmu']} itself")
    return list(dict.fromkeys(out))


_DECLARES = re.compile(r"^\s*(?:const\s+)?(?:struct\s+|unsigned\s+)?\w+[\s*]+(\w+)\s*(?:=|;|\[)")
_PARAM = re.compile(r"(\w+)\s*(?:,|\))")


def redeclared(added: list[str], body: list[str], kept: list[str], types: tuple[str, ...]) -> list[str]:
    """MMU, walker or page-format locals (`types`: their struct names) the ported lines
    declare that the target function already declares (as a parameter or a local it keeps):
    the patch restructured the function there."""
    have = set()
    head = []
    for line in body:
        head.append(line)
        if line.rstrip().endswith("{") or line == "{":
            break
    have |= {m.group(1) for m in _PARAM.finditer(" ".join(head))}
    have |= {m.group(1) for x in kept for m in [_DECLARES.match(x)] if m}
    out = []
    for line in added:
        m = _DECLARES.match(line)
        if m and m.group(1) in have and re.match(rf"\s*(?:const\s+)?struct\s+(?:{'|'.join(types)})\b", line):
            out.append(m.group(1))
    return out


# restructure.toml keys that name the functions a rule restructured.
_RESTRUCTURED = ("function", "to", "dispatcher", "then_mmu", "walker_first", "merge", "rename", "inner",
                 "old", "new", "bitmask", "helper", "hook")


def _rule_names(kind: str, r) -> set[str]:
    """The functions restructure.toml rule `r` (of table `kind`) restructured."""
    names = set()
    for key in _RESTRUCTURED + (("from",) if kind == "walker_init" else ()):
        value = r.params.get(key)
        values = (list(value) + list(value.values()) if isinstance(value, dict)
                  else value if isinstance(value, list) else [value])
        names |= {v for v in values if isinstance(v, str) and re.fullmatch(r"[A-Za-z_]\w*", v)}
    return names


def restructured_by(texts: list[str], rules) -> list[str]:
    """Ids of the restructure.toml rules whose functions the lines name: code the refactor
    restructured, with no line-for-line counterpart in the other layout (the rules the port
    inverts, [[attach_walker]] and [[attach_member]], aside)."""
    words = set(_IDENT.findall("\n".join(texts)))
    out = []
    for kind, entries in rules.restructure.items():
        # Inverted by the port, or (prerequisite) a check of the tree that restructures nothing.
        if kind in ("attach_walker", "attach_member", "prerequisite"):
            continue
        out += [r.id for r in entries if _rule_names(kind, r) & words]
    return out


_ABSENT = re.compile(r"^\(not in the (?:patch|target)\)$")


def _differing_words(differing: list[tuple[str, str]]) -> set[str]:
    """Identifiers in which the patch's and the target's lines of each differing pair differ
    (all of a line that has no counterpart)."""
    out: set[str] = set()
    for a, b in differing:
        wa, wb = ([] if _ABSENT.match(x.strip()) else _IDENT.findall(x) for x in (a, b))
        out |= set(wa) ^ set(wb)
    return out


def restructuring_causes(ids: list[str], differing: list[tuple[str, str]], function: str | None,
                         texts: list[str], target: Target, located: bool, rules) -> list[str]:
    """Of restructure rules `ids` a conflicting hunk touches, those that stop it: the rule
    that restructured the function the hunk is in; one whose functions are among the
    identifiers the differing lines differ in, or whose statement is one of those lines;
    or one whose function the hunk's lines (`texts`) call and the target does not define.
    A hunk that merely mentions a restructured function the target has too (the same call
    on both sides, or only in unchanged context) while other lines differ conflicts for
    those lines, not the restructuring.  A hunk the target holds with no differing lines
    keeps `ids`."""
    if located and not differing:
        return ids
    stops = _differing_words(differing) | {function}
    stops |= {w for w in set(_IDENT.findall("\n".join(texts))) - stops if not target.definitions(w)}
    lines = {x.strip() for pair in differing for x in pair}
    out = []
    for kind, entries in rules.restructure.items():
        for r in entries:
            statement = r.params.get("statement")
            if r.id in ids and (_rule_names(kind, r) & stops or statement in lines):
                out.append(r.id)
    return out

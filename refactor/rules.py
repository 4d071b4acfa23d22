"""The one loader of rules/: every consumer reads the refactor through here.

rules/ holds data only (TOML).  This module turns it into small typed objects
and answers the questions the consumers ask: which names to look for, where a
field of the old struct kvm_mmu goes, what an old base expression becomes when
used as a walker, and which C identifiers the walkers get.
"""
from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

# rules/ sits at the top of the repository; pyproject.toml's package-dir ships it
# as the package refactor.rules_data (RULES_PACKAGE), so installed copies find
# it through importlib.resources.  A checkout without an install (PYTHONPATH=.)
# has no such package: there it is the rules/ beside refactor/.
RULES_PACKAGE = "refactor.rules_data"


def _rules_dir() -> Path:
    import importlib.resources

    try:
        found = importlib.resources.files(RULES_PACKAGE).joinpath("names.toml")
    except ModuleNotFoundError:
        found = None
    if isinstance(found, Path) and found.is_file():
        return found.parent
    return Path(__file__).resolve().parent.parent / "rules"


RULES_DIR = _rules_dir()

_C_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# C keywords and names a walker could never take without breaking the build.
_C_KEYWORDS = frozenset(
    "auto break case char const continue default do double else enum extern float for goto if "
    "inline int long register restrict return short signed sizeof static struct switch typedef "
    "union unsigned void volatile while _Bool".split()
)


from refactor.errors import RulesError  # noqa: E402  (re-exported: its historic home)
from refactor.rule_ids import RuleEntry, build_registry, cite, cited  # noqa: E402,F401  (re-exported)
from refactor.rule_types import (  # noqa: E402,F401  (re-exported: the objects rules/ loads into)
    Base, CallRule, ExprRule, MmuField, NewField, NewMember, RestructureRule, VcpuMember, WalkerNames,
)


def squash(text: str) -> str:
    """C text without whitespace: how rules compare expressions (`vcpu -> arch.mmu` == `vcpu->arch.mmu`)."""
    return re.sub(r"\s+", "", text)


@dataclass
class Rules:
    directory: Path
    presets: dict[str, WalkerNames]
    roles: dict[str, str]
    types: dict[str, str]
    vcpu_old: dict[str, VcpuMember]
    vcpu_new: dict[str, NewMember]
    mmu_fields: dict[str, MmuField]
    new_fields: dict[str, NewField]
    bases: list[Base]
    exprs: list[ExprRule]
    raw: dict[str, dict] = field(default_factory=dict, repr=False)
    restructure: dict[str, list[RestructureRule]] = field(default_factory=dict)
    calls: list[CallRule] = field(default_factory=list)
    registry: dict[str, RuleEntry] = field(default_factory=dict, repr=False)
    families: dict[str, RuleEntry] = field(default_factory=dict, repr=False)  # "field-{field}" -> entry
    stage: "Stage | None" = None  # None: the whole refactor is in force
    # mappings.toml entries read by one engine only: id -> (the engines that read it, why).
    consumers: dict[str, tuple[frozenset, str]] = field(default_factory=dict)
    # restructure.toml [port_roles]: table -> {"introduces": {key: {key: phrase}},
    # "changes": [key], "callers": {key: phrase}} (refactor/port/counterparts.py)
    port_roles: dict[str, dict] = field(default_factory=dict)

    def read_only_by(self, engine: str) -> dict[str, str]:
        """{id: why} of the mapping entries only `engine` (one of CONSUMERS) reads."""
        return {i: why for i, (engines, why) in self.consumers.items() if engines == {engine}}

    # ---- names ----------------------------------------------------------
    def names(self, spec: str | None = "upstream") -> WalkerNames:
        """Resolve a preset name or a custom "gva=X,ngpa=Y" specification."""
        spec = (spec or "upstream").strip()
        if "=" not in spec:
            if spec not in self.presets:
                raise RulesError(
                    f"unknown names preset {spec!r} (known: {', '.join(sorted(self.presets))}; "
                    "or give gva=NAME,ngpa=NAME)"
                )
            return self.presets[spec]
        bound: dict[str, str] = {}
        for part in spec.split(","):
            role, sep, ident = part.partition("=")
            role, ident = role.strip(), ident.strip()
            if not sep or role not in self.roles:
                raise RulesError(f"bad names item {part!r}: expected one of {sorted(self.roles)}=NAME")
            bound[role] = ident
        missing = set(self.roles) - set(bound)
        if missing:
            raise RulesError(f"names specification lacks {', '.join(sorted(missing))}")
        names = WalkerNames(**bound)
        self.check_names(names)
        return names

    def check_names(self, names: WalkerNames, taken: set[str] | frozenset[str] = frozenset()) -> None:
        """Walker names must be distinct C identifiers unused in the tree."""
        idents = names.as_dict()
        for role, ident in idents.items():
            if not _C_IDENT.match(ident) or ident in _C_KEYWORDS:
                raise RulesError(f"{role} walker name {ident!r} is not a C identifier")
            if ident in taken:
                raise RulesError(f"{role} walker name {ident!r} is already used in the tree")
            if ident in self.vcpu_old:
                raise RulesError(f"{role} walker name {ident!r} is an old-layout member name")
        if names.gva == names.ngpa:
            raise RulesError("the two walkers need different names")

    # ---- symbols the index looks for -------------------------------------
    def old_vcpu_members(self) -> list[str]:
        return list(self.vcpu_old)

    def member_of_kind(self, kind: str) -> str | None:
        """The old vcpu-arch member of a kind (walker_pointer: walk_mmu; walk_only_mmu: nested_mmu)."""
        return next((n for n, m in self.vcpu_old.items() if m.kind == kind), None)

    def walker_fields(self) -> list[str]:
        return [f.name for f in self.mmu_fields.values() if f.moves_to_walker]

    def type_names(self) -> list[str]:
        return [self.types[k] for k in ("mmu", "walker", "format", "old_format")]

    def new_member_names(self, names: WalkerNames | None = None) -> list[str]:
        """New-layout names to recognise: the walker members and the new fields."""
        out = list(self.new_fields)
        if names is None:
            out += [p.gva for p in self.presets.values()] + [p.ngpa for p in self.presets.values()]
        else:
            out += [names.gva, names.ngpa]
        return sorted(set(out))

    # ---- mapping --------------------------------------------------------
    def base_for(self, old_expr: str) -> Base:
        """The base rule for an old MMU expression (compared without spaces)."""
        key = squash(old_expr)
        for base in self.bases:
            if not base.generic and squash(base.old) == key:
                return base
        for base in self.bases:
            if base.generic:
                return base
        raise RulesError("rules/mappings.toml has no generic {base} entry")

    def walker_access(self, old_base: str, field_name: str, names: WalkerNames,
                      old_is_ptr: bool = True) -> str:
        """New text of `old_base->field` (or `.field`) where the field moves to the walker."""
        f = self.mmu_fields[field_name]
        base = self.base_for(old_base)
        new_base = names.fill(base.new, base=old_base)
        if f.dest == "mmu":
            return f"{old_base}{'->' if old_is_ptr else '.'}{f.path}"
        sep = "->" if base.new_is == "ptr" else "."
        return f"{new_base}{sep}{f.path}"

    def walker_pointer(self, old_base: str, names: WalkerNames) -> str:
        """A pointer to the walker an old base stands for (for arguments and compares)."""
        base = self.base_for(old_base)
        new = names.fill(base.new, base=old_base)
        return new if base.new_is == "ptr" else f"&{new}"

    # ---- the registry ----------------------------------------------------
    def rule(self, rule_id: str) -> RuleEntry:
        """The registry entry of an id cited in output (RulesError if rules/ does not define it)."""
        entry = self.registry.get(rule_id)
        if entry is None:
            raise RulesError(f"rule id {rule_id!r} is not defined in rules/ (see rules/decisions.toml)")
        return entry

    def check_cited(self, ids: Mapping[str, str] | None = None) -> None:
        """Every id the code cites (cite()) resolves to an entry or a family of the registry."""
        ids = cited() if ids is None else ids
        missing = sorted(f"{i} (cited by {m})" for i, m in ids.items()
                         if i not in self.registry and i not in self.families)
        if missing:
            raise RulesError(f"{self.directory}: rule ids cited by the code but not defined in rules/ "
                             f"(add a [[decisions]] entry with a why to decisions.toml): {', '.join(missing)}")

    def expr(self, rule_id: str) -> ExprRule:
        for e in self.exprs:
            if e.id == rule_id:
                return e
        raise RulesError(f"no expression rule {rule_id!r} in rules/mappings.toml")


def _read(directory: Path, name: str) -> dict:
    from refactor import rules_overlay

    path = directory / name
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise RulesError(f"{path}: missing rules file") from None
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"{path}: {exc}") from None
    return rules_overlay.apply(name, data)  # the user's --rules, if any


read_rules_file = _read  # public name, for loaders of other rules files (lint.toml)


def _need(data: dict, key: str, where: str):
    if key not in data:
        raise RulesError(f"{where}: missing key {key!r}")
    return data[key]


@lru_cache(maxsize=8)
def load_rules(directory: str | Path | None = None) -> Rules:
    """Load and check rules/ (cached: the data is read-only)."""
    directory = Path(directory) if directory else RULES_DIR
    names = _read(directory, "names.toml")
    layout = _read(directory, "layout.toml")
    mappings = _read(directory, "mappings.toml")

    roles = {r: v.get("summary", "") for r, v in _need(names, "roles", "names.toml").items()}
    presets = {}
    for pname, binding in _need(names, "presets", "names.toml").items():
        if set(binding) != set(roles):
            raise RulesError(f"names.toml: preset {pname!r} must bind exactly {sorted(roles)}")
        presets[pname] = WalkerNames(preset=pname, **binding)

    vcpu = _need(layout, "vcpu_arch", "layout.toml")
    vcpu_old = {
        n: VcpuMember(name=n, kind=v["kind"], removed=v.get("removed", False),
                      walker=v.get("walker"), targets=tuple(v.get("targets", ())),
                      compare_as_walker=v.get("compare_as_walker", False),
                      as_builder=v.get("as_builder"))
        for n, v in _need(vcpu, "old", "layout.toml [vcpu_arch]").items()
    }
    mmu_fields = {}
    for n, v in _need(layout, "mmu_fields", "layout.toml").items():
        dest = _need(v, "dest", f"layout.toml [mmu_fields.{n}]")
        if dest not in ("walker", "mmu"):
            raise RulesError(f"layout.toml [mmu_fields.{n}]: dest must be walker or mmu")
        mmu_fields[n] = MmuField(name=n, dest=dest, path=v.get("path", n), why=v.get("why", ""))

    bases = [Base(id=b["id"], old=b["old"], new=b["new"], new_is=b["new_is"], why=b.get("why", ""),
                  known_guest_mmu=b.get("known_guest_mmu"))
             for b in _need(mappings, "bases", "mappings.toml")]
    for b in bases:
        if b.new_is not in ("ptr", "obj"):
            raise RulesError(f"mappings.toml base {b.id}: new_is must be ptr or obj")
    exprs = [ExprRule(id=e["id"], old=e["old"], new=e["new"], why=e.get("why", ""))
             for e in mappings.get("exprs", [])]

    rules = Rules(
        directory=directory, presets=presets, roles=roles,
        types=_need(layout, "types", "layout.toml"), vcpu_old=vcpu_old,
        vcpu_new={r: NewMember(role=r, type=_need(v, "type", f"layout.toml [vcpu_arch.new.{r}]"),
                               replaces=tuple(v.get("replaces", ())))
                  for r, v in vcpu.get("new", {}).items()},
        mmu_fields=mmu_fields,
        new_fields={n: NewField(name=n, struct=v.get("struct", ""),
                                type=_need(v, "type", f"layout.toml [new_fields.{n}]"), why=v.get("why", ""))
                    for n, v in layout.get("new_fields", {}).items()},
        bases=bases, exprs=exprs,
        raw={"names": names, "layout": layout, "mappings": mappings},
    )
    rules.calls = [_call_rule(c) for c in mappings.get("calls", [])]
    rules.consumers = _consumers(mappings)
    restructure_path = directory / "restructure.toml"
    if restructure_path.exists():
        raw_restructure = _read(directory, "restructure.toml")
        rules.raw["restructure"] = raw_restructure
        rules.restructure = {kind: [_restructure_rule(kind, entry) for entry in entries]
                             for kind, entries in raw_restructure.items() if isinstance(entries, list)}
        rules.port_roles = _port_roles(raw_restructure.get("port_roles", {}), rules.restructure)
    rules.registry, rules.families = build_registry(rules, mappings)
    for p in presets.values():
        rules.check_names(p)
    rules.check_cited()
    return rules


# The engines that apply a mappings.toml entry to code: the Python model (emulator/derive.py
# rewrites kvm_old.py) and the rewriter (refactor/plan, the real trees).  Both read every
# entry unless it says otherwise (tests/test_rule_consumers.py checks the claim).
CONSUMERS = ("model", "rewriter")


def _consumers(mappings: dict) -> dict[str, tuple[frozenset, str]]:
    """The entries with `consumers = [...]` leaving an engine out, each with its consumers_why."""
    out = {}
    for table in ("bases", "exprs", "calls"):
        for raw in mappings.get(table, []):
            where = f"mappings.toml [[{table}]] {raw.get('id', '?')}"
            engines = raw.get("consumers", list(CONSUMERS))
            why = raw.get("consumers_why", "")
            if not isinstance(engines, list) or not engines or len(set(engines)) != len(engines) \
                    or not set(engines) <= set(CONSUMERS):
                raise RulesError(f"{where}: consumers must be a non-empty list of {', '.join(CONSUMERS)}")
            if set(engines) == set(CONSUMERS):
                if why:
                    raise RulesError(f"{where}: consumers_why is only for an entry whose consumers "
                                     "leave an engine out")
                continue
            if not isinstance(why, str) or not why.strip():
                raise RulesError(f"{where}: consumers = {engines} needs a consumers_why saying why "
                                 f"{', '.join(sorted(set(CONSUMERS) - set(engines)))} does not read it")
            out[raw["id"]] = (frozenset(engines), why.strip())
    return out


def _call_rule(raw: dict) -> CallRule:
    where = f"mappings.toml [[calls]] {raw.get('id', '?')}"
    return CallRule(id=_need(raw, "id", where), function=_need(raw, "function", where),
                    arg=raw.get("arg", 0), new=_need(raw, "new", where), why=raw.get("why", ""))


def _port_roles(raw: dict, tables: dict[str, list[RestructureRule]]) -> dict[str, dict]:
    """restructure.toml [port_roles], checked: every table and key it names must exist, so a
    renamed key cannot silently drop a function from the port's view of the refactor."""
    out: dict[str, dict] = {}
    for table, spec in raw.items():
        where = f"restructure.toml [port_roles.{table}]"
        if table not in tables or not isinstance(spec, dict):
            raise RulesError(f"{where}: no [[{table}]] table to describe")
        keys = {k for r in tables[table] for k in r.params} | {"rename"}
        introduces = spec.get("introduces", {})
        changes = spec.get("changes", [])
        callers = spec.get("callers", {})
        named = set(introduces) | set(changes) | set(callers) | \
            {k for v in introduces.values() if isinstance(v, dict) for k in v}
        bad = sorted(named - keys)
        if bad or not all(isinstance(v, dict) for v in introduces.values()):
            raise RulesError(f"{where}: names keys [[{table}]] entries lack: {', '.join(bad) or '?'}")
        out[table] = {"introduces": {k: dict(v) for k, v in introduces.items()},
                      "changes": tuple(changes), "callers": dict(callers)}
    return out


def _restructure_rule(kind: str, raw: dict) -> RestructureRule:
    rule_id = _need(raw, "id", f"restructure.toml [[{kind}]]")
    return RestructureRule(kind=kind, id=rule_id, why=raw.get("why", ""),
                           params={k: v for k, v in raw.items() if k not in ("id", "why")})


# ---- series steps --------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    id: str
    subject: str
    body: str
    rename_format: bool = False
    introduce_walker: bool = False
    move_fields: tuple[str, ...] = ()
    narrow: bool | tuple[str, ...] = False  # a list: only these functions (or #define-made ones)
    remove_members: bool | tuple[str, ...] = False  # a list: only these kvm_vcpu_arch members
    walker_init: bool = False
    restructure: tuple[str, ...] = ()  # restructure.toml rule ids in force from this step on
    # Paragraphs said only when this step's commit applies the rule: (rule id, text, whether
    # the rule changes behaviour, which drops "No functional change intended.").
    when: tuple[tuple[str, str, bool], ...] = ()


@dataclass(frozen=True)
class Stage:
    """What is in force after some steps (the whole refactor when all are)."""

    rename_format: bool = True
    introduce_walker: bool = True
    moved: frozenset = frozenset()
    narrow: bool = True
    remove_members: bool = True
    walker_init: bool = True
    complete: bool = True
    narrow_only: frozenset | None = None  # narrowing limited to these functions (None: all)
    # restructure.toml rule ids a later step brings in: not in force yet (ids no step
    # lists are in force whenever their pass runs).
    restructure_off: frozenset = frozenset()


def load_steps(rules: Rules) -> list[Step]:
    data = _read(rules.directory, "steps.toml")
    steps = []
    for raw in _need(data, "steps", "steps.toml"):
        steps.append(Step(id=raw["id"], subject=raw["subject"], body=raw.get("body", "").strip(),
                          rename_format=raw.get("rename_format", False),
                          introduce_walker=raw.get("introduce_walker", False),
                          move_fields=tuple(raw.get("move_fields", ())), narrow=_flag(raw, "narrow"),
                          remove_members=_flag(raw, "remove_members"),
                          walker_init=raw.get("walker_init", False),
                          restructure=tuple(raw.get("restructure", ())),
                          when=tuple((w["rule"], w["text"].strip(), bool(w.get("functional", False)))
                                     for w in raw.get("when", ()))))
    known = {r.id for entries in rules.restructure.values() for r in entries}
    unknown = sorted(({r for s in steps for r in s.restructure}
                      | {w[0] for s in steps for w in s.when}) - known)
    if unknown:
        raise RulesError(f"steps.toml: restructure names ids restructure.toml lacks: {', '.join(unknown)}")
    moving = {n for n, f in rules.mmu_fields.items() if f.dest == "walker" or f.path != n}
    listed = {f for s in steps for f in s.move_fields}
    if moving - listed:
        raise RulesError(f"steps.toml: no step moves {', '.join(sorted(moving - listed))}")
    return steps


def _flag(raw: dict, key: str) -> bool | tuple[str, ...]:
    value = raw.get(key, False)
    return tuple(value) if isinstance(value, list) else bool(value)


def staged(rules: Rules, steps: list[Step], upto: int) -> Rules:
    """The rules as in force after steps[:upto]: fields not moved yet stay put."""
    import copy

    done = steps[:upto]
    narrow_all = any(s.narrow is True for s in done)
    narrow_some = frozenset(f for s in done if isinstance(s.narrow, tuple) for f in s.narrow)
    removed = {n for n in rules.vcpu_old if any(s.remove_members is True or
                                                (isinstance(s.remove_members, tuple) and n in s.remove_members)
                                                for s in done)}
    stage = Stage(rename_format=any(s.rename_format for s in done),
                  introduce_walker=any(s.introduce_walker for s in done),
                  moved=frozenset(f for s in done for f in s.move_fields),
                  narrow=narrow_all or bool(narrow_some), remove_members=bool(removed),
                  narrow_only=None if narrow_all or not narrow_some else narrow_some,
                  walker_init=any(s.walker_init for s in done),
                  restructure_off=frozenset(r for s in steps[upto:] for r in s.restructure),
                  complete=upto >= len(steps))
    out = copy.copy(rules)
    out.stage = stage
    out.mmu_fields = {n: (f if n in stage.moved else MmuField(n, "mmu", n, f.why))
                      for n, f in rules.mmu_fields.items()}
    out.vcpu_old = {n: (m if n in removed else
                        VcpuMember(m.name, m.kind, False, m.walker, m.targets, m.compare_as_walker,
                                   m.as_builder))
                    for n, m in rules.vcpu_old.items()}
    if not stage.rename_format:
        out.types = dict(rules.types, format=rules.types["old_format"])
    return out

"""The registry of rule ids: every id the tool cites, with the `why` rules/ gives it.

Ids come from the rules tables (mappings.toml bases, exprs, calls and
[[decisions]]; restructure.toml entries).  Ids the code writes itself, rather
than reading them from a table, are declared with cite() where they are
written; refactor.rules.load_rules() refuses rules that leave one undefined.
This module reads the loaded rules only through their attributes, so it does
not import refactor.rules.
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass

from refactor.errors import RulesError

_CITED: dict[str, str] = {}  # id (or "field-{field}"-style family) -> module citing it


def cite(rule_id: str) -> str:
    """Declare an id the code writes into its output; returns it (module-level constants)."""
    _CITED.setdefault(rule_id, sys._getframe(1).f_globals.get("__name__", "?"))
    return rule_id


def cited() -> dict[str, str]:
    """The ids declared by cite() in the modules imported so far, with the citing module."""
    return dict(_CITED)


@dataclass(frozen=True)
class RuleEntry:
    """One id of the registry: why the change it names is right, and where rules/ says so."""

    id: str
    why: str
    source: str  # e.g. "mappings.toml [[bases]]"
    family: str | None = None  # the decisions.toml template it expands ("field-{field}")


# The tables a decisions family can range over (`each`), by their rules/ path.
def _family_tables(rules) -> dict[str, dict[str, str]]:
    return {"layout.mmu_fields": {n: f.why for n, f in rules.mmu_fields.items()},
            "layout.vcpu_arch.old": {n: "" for n in rules.vcpu_old}}


def build_registry(rules, mappings: dict) -> tuple[dict[str, RuleEntry], dict[str, RuleEntry]]:
    """Every rule id rules/ defines, with its why; an id without a why must be defined elsewhere."""
    registry: dict[str, RuleEntry] = {}
    families: dict[str, RuleEntry] = {}
    referring: list[tuple[str, str]] = []  # (id, where) of entries that give no why of their own

    def add(rule_id: str, why: str, source: str, family: str | None = None) -> None:
        if not why.strip():
            referring.append((rule_id, source))
        elif rule_id not in registry:  # an explicit entry wins over a family member
            registry[rule_id] = RuleEntry(rule_id, why.strip(), source, family)

    for b in rules.bases:
        add(b.id, b.why, "mappings.toml [[bases]]")
    for e in rules.exprs:
        add(e.id, e.why, "mappings.toml [[exprs]]")
    for c in rules.calls:
        add(c.id, c.why, "mappings.toml [[calls]]")
    for kind, entries in rules.restructure.items():
        for r in entries:
            add(r.id, r.why, f"restructure.toml [[{kind}]]")
    tables = _family_tables(rules)
    templates = []
    for raw in mappings.get("decisions", []):
        where = f"mappings.toml [[decisions]] {raw.get('id', '?')}"
        rule_id, why = _need(raw, "id", where), _need(raw, "why", where)
        if not why.strip():
            raise RulesError(f"{where}: empty why")
        if "{" not in rule_id:
            add(rule_id, why, "mappings.toml [[decisions]]")
            continue
        each = _need(raw, "each", where)
        unknown = [t for t in each if t not in tables]
        if unknown:
            raise RulesError(f"{where}: each names unknown tables {unknown} (known: {sorted(tables)})")
        families[rule_id] = RuleEntry(rule_id, why.strip(), "mappings.toml [[decisions]]")
        templates.append((rule_id, why, each))
    for rule_id, why, each in templates:
        placeholder = re.search(r"\{(\w+)\}", rule_id).group(0)
        for table in each:
            for key, own_why in tables[table].items():
                add(rule_id.replace(placeholder, key), own_why or why,
                    f"mappings.toml [[decisions]] {rule_id} ({table}.{key})", rule_id)
    undefined = sorted(f"{i} ({where})" for i, where in referring if i not in registry)
    if undefined:
        raise RulesError(f"rule ids with no why anywhere in rules/: {', '.join(undefined)}")
    return registry, families


def _need(data: dict, key: str, where: str):
    if key not in data:
        raise RulesError(f"{where}: missing key {key!r}")
    return data[key]

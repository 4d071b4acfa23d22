"""rules/lint.toml: the lint rules, and their suggested fixes.

Fixes are never spelled here: each one is computed through refactor.rules
(the bases and expression rules of mappings.toml, the field paths of
layout.toml) with the walker names in force, exactly as the rewriter does.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from refactor.rules import (RULES_DIR, Rules, RulesError, WalkerNames, load_rules,
                            read_rules_file, squash)

SEVERITIES = ("error", "warning", "note")
# How message placeholders read in rule descriptions (docs, SARIF rules).
PLACEHOLDERS = {"symbol": "NAME", "expr": "EXPR", "callee": "F", "arg": "ARG", "role": "WALKER", "fix": "FIX",
                "edit_rule": "EDIT", "why": "WHY"}
LAYOUTS = ("old", "new", "mixed")
_MATCH_KEYS = {"kind", "removed", "dest", "renamed", "base", "type", "pattern", "address", "walker",
               "argument", "stage"}
_DOC_KEYS = ("what", "why", "example", "use_instead")
# match.pattern names a handler: a function registered with @handler(NAME) (shapes.py, engine.py).
# Rules without a pattern select index references (engine.reference_findings).
HANDLERS: dict[str, object] = {}


def handler(pattern: str):
    """Register the function that finds the shapes of rules with `match.pattern = PATTERN`."""
    def register(fn):
        HANDLERS[pattern] = fn
        return fn
    return register


@dataclass(frozen=True)
class LintSettings:
    """[settings] of lint.toml, checked and typed."""

    gva_address_types: tuple[str, ...]
    ngpa_address_types: tuple[str, ...]
    gva_address_words: tuple[str, ...]
    ngpa_address_words: tuple[str, ...]
    mmu_pointer_names: tuple[str, ...]
    translate_field: str
    translate_walker_arg: int
    translate_address_arg: int
    nested_fault_field: str
    # Functions of the nGPA stage (fnmatch patterns): they work with the {ngpa} walker.
    ngpa_stage_functions: tuple[str, ...] = ()
    # The kvm_pagewalk layout's functions taking a struct kvm_pagewalk * (name -> argument
    # indexes): known without --tree.
    walker_parameters: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @classmethod
    def parse(cls, data: dict) -> "LintSettings":
        kinds = {"translate_field": str, "nested_fault_field": str, "translate_walker_arg": int,
                 "translate_address_arg": int}
        values: dict = {}
        fields = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - fields
        if unknown:
            raise RulesError(f"lint.toml [settings]: unknown key {sorted(unknown)[0]!r}")
        for name in fields:
            if name not in data:
                if name in ("ngpa_stage_functions", "walker_parameters"):
                    continue
                raise RulesError(f"lint.toml [settings]: missing key {name!r}")
            value = data[name]
            if name == "walker_parameters":
                if not isinstance(value, dict) or not all(
                        isinstance(v, list) and v and all(isinstance(i, int) and i >= 0 for i in v)
                        for v in value.values()):
                    raise RulesError("lint.toml [settings]: walker_parameters maps function names to "
                                     "lists of argument indexes")
                values[name] = {k: tuple(v) for k, v in value.items()}
            elif name in kinds:
                if not isinstance(value, kinds[name]) or isinstance(value, bool):
                    raise RulesError(f"lint.toml [settings]: {name} must be a{'n integer' if kinds[name] is int else ' string'}")
                values[name] = value
            else:
                if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                    raise RulesError(f"lint.toml [settings]: {name} must be a list of strings")
                values[name] = tuple(value)
        return cls(**values)


@dataclass(frozen=True)
class RuleDoc:
    """What a rule checks, why that is wrong, an example and the fix (docs, --explain, SARIF)."""

    what: str
    why: str
    example: str
    use_instead: str
_FIX_KEYS = {"by_use", "write", "compare", "builder_field", "field", "expr", "walker_of", "pointer", "rewrite"}


@dataclass(frozen=True)
class LintRule:
    id: str
    name: str
    severity: str
    layouts: tuple[str, ...]
    message: str
    help: str
    match: dict
    fix: dict
    old_message: str | None = None
    doc: RuleDoc | None = None

    def applies(self, layout: str) -> bool:
        return layout in self.layouts

    @property
    def patterns(self) -> tuple[str, ...]:
        """The handlers this rule is found by (none: an index-reference rule)."""
        p = self.match.get("pattern")
        return () if p is None else (p,) if isinstance(p, str) else tuple(p)

    def render(self, template: str, values: dict[str, str]) -> str:
        return template.format_map(_Blank(values))


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return "?"


@dataclass
class LintRules:
    rules: Rules
    items: list[LintRule]
    settings: LintSettings

    def by_id(self, rule_id: str) -> LintRule:
        for r in self.items:
            if r.id == rule_id:
                return r
        raise RulesError(f"lint.toml has no rule {rule_id!r}")

    def with_pattern(self, pattern: str) -> list[LintRule]:
        return [r for r in self.items if pattern in r.patterns]

    # ---- fixes, all through refactor.rules ---------------------------------
    def field_fix(self, base: str, fname: str, names: WalkerNames, arrow: bool = True,
                  known_target: str | None = None) -> str:
        """New text of BASE->FIELD (BASE.FIELD) where FIELD moves or is renamed."""
        rb = self.rules.base_for(base)
        if (known_target and rb.known_guest_mmu and self.rules.mmu_fields[fname].moves_to_walker
                and squash(known_target) == "&" + squash(self.rules.base_for("vcpu->arch.guest_mmu").old)):
            # mappings.toml: where vcpu->arch.mmu is known to be &guest_mmu, it walks {ngpa}.
            new_base = names.fill(rb.known_guest_mmu)
            return f"{new_base}.{self.rules.mmu_fields[fname].path}"
        return self.rules.walker_access(base, fname, names, old_is_ptr=arrow)

    def pointer_fix(self, expr: str, names: WalkerNames) -> str:
        """A pointer to the walker that EXPR (a struct kvm_mmu pointer or &object) stands for."""
        expr = expr.strip()
        if expr.startswith("&"):
            inner = expr[1:].strip()
            rb = self.rules.base_for(inner)
            if not rb.generic:
                return self.rules.walker_pointer(inner, names)
        return self.rules.walker_pointer(expr, names)

    def walker_of(self, base_id: str, names: WalkerNames) -> str:
        """Pointer to the walker a mappings.toml base stands for ({gva} for walk-mmu...)."""
        for b in self.rules.bases:
            if b.id == base_id:
                return self.rules.walker_pointer(b.old, names)
        raise RulesError(f"lint.toml: no base {base_id!r} in mappings.toml")

    def expr_new(self, expr_id: str, names: WalkerNames) -> str:
        return names.fill(self.rules.expr(expr_id).new)

    def compare_rule(self, rule: LintRule, line: str) -> str | None:
        """The mappings.toml comparison rule whose right-hand side the line contains."""
        flat = squash(line)
        for expr_id in rule.fix.get("compare", []):
            old = self.rules.expr(expr_id).old
            m = re.search(r"(!=|==)(.*)$", old)
            if m and squash(m.group(1) + m.group(2)) in flat:
                return expr_id
        return None

    def member_fix(self, member: str, names: WalkerNames) -> str | None:
        """The new kvm_vcpu_arch member that replaces an old one (layout.toml)."""
        for role, spec in self.rules.vcpu_new.items():
            if member in spec.get("replaces", []):
                return f"{spec['type']} {names.as_dict()[role]};"
        return None

    def field_destination(self, fname: str) -> str:
        f = self.rules.mmu_fields[fname]
        struct = self.rules.types["walker"] if f.moves_to_walker else self.rules.types["mmu"]
        return f"struct {struct}.{f.path}"


def _check(item: dict, rules: Rules, where: str) -> LintRule:
    for key in ("id", "name", "severity", "layouts", "message", "help", "match", "fix"):
        if key not in item:
            raise RulesError(f"{where}: missing key {key!r}")
    if item["severity"] not in SEVERITIES:
        raise RulesError(f"{where}: severity must be one of {', '.join(SEVERITIES)}")
    if not set(item["layouts"]) <= set(LAYOUTS):
        raise RulesError(f"{where}: layouts must be among {', '.join(LAYOUTS)}")
    if set(item["match"]) - _MATCH_KEYS or set(item["fix"]) - _FIX_KEYS:
        raise RulesError(f"{where}: unknown match/fix key")
    # Every mapping id a rule names must exist: a typo would silently drop fixes.
    fix = item["fix"]
    for expr_id in [fix.get("expr"), fix.get("write"), fix.get("builder_field"), *fix.get("compare", [])]:
        if expr_id:
            rules.expr(expr_id)
    if fix.get("walker_of") and fix["walker_of"] not in {b.id for b in rules.bases}:
        raise RulesError(f"{where}: walker_of names no base of mappings.toml")
    if item["match"].get("type") and item["match"]["type"] not in rules.types:
        raise RulesError(f"{where}: match.type must be a key of layout.toml [types]")
    pattern = item["match"].get("pattern")
    for p in [pattern] if isinstance(pattern, str) else pattern or []:
        if p not in HANDLERS:
            raise RulesError(f"{where}: match.pattern {p!r} names no handler "
                             f"(known: {', '.join(sorted(HANDLERS))})")
    doc = item.get("doc")
    if not isinstance(doc, dict) or set(_DOC_KEYS) - set(doc) or set(doc) - set(_DOC_KEYS):
        raise RulesError(f"{where}: doc must have exactly the keys {', '.join(_DOC_KEYS)}")
    return LintRule(id=item["id"], name=item["name"], severity=item["severity"],
                    layouts=tuple(item["layouts"]), message=item["message"], help=item["help"],
                    match=dict(item["match"]), fix=dict(fix), old_message=item.get("old_message"),
                    doc=RuleDoc(**{k: str(doc[k]).strip("\n") for k in _DOC_KEYS}))


@lru_cache(maxsize=4)
def load_lint_rules(directory: str | Path | None = None) -> LintRules:
    directory = Path(directory) if directory else RULES_DIR
    rules = load_rules(directory)
    data = read_rules_file(directory, "lint.toml")  # with the user's --rules overlay
    import refactor.lint.references  # noqa: F401  (these two register the pattern handlers checked below)
    import refactor.lint.shapes  # noqa: F401

    items = [_check(item, rules, f"lint.toml rule {item.get('id', i)}")
             for i, item in enumerate(data.get("rule", []))]
    ids = [r.id for r in items]
    if len(ids) != len(set(ids)):
        raise RulesError("lint.toml: rule ids must be unique")
    return LintRules(rules=rules, items=items, settings=LintSettings.parse(data.get("settings", {})))


def markdown_table(lint: LintRules | None = None) -> str:
    """The rules table of docs/lint.md (generated by refactor.lint.docs)."""
    from refactor.lint.docs import markdown_table as table

    return table(lint)


if __name__ == "__main__":  # python -m refactor.lint.registry > table (docs/lint.md)
    print(markdown_table(), end="")

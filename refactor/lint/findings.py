"""What lint looks at and what it reports: a Unit (a tree, or the files of one patch) and
its Findings, with the helpers every rule uses to build them (refactor/lint/references.py
for the index's references, refactor/lint/shapes.py for shapes the index does not track).
"""
from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field

from refactor.frontend.parse import ParsedFile, parse
from refactor.index.indexer import Reference
from refactor.index.program import Program, squash
from refactor.lint.registry import LintRule, LintRules
from refactor.rules import WalkerNames


@dataclass
class Finding:
    rule: str
    name: str
    severity: str
    file: str
    line: int
    column: int  # 1-based, as compilers print it
    message: str
    help: str
    expression: str
    function: str | None = None
    fix: str | None = None  # suggested replacement of `expression` ("" = delete the statement)
    patch: str | None = None  # label of the patch (patches only)
    fingerprint: str = ""
    symbol: str | None = None  # the name the rule matched (not in the output: carried.py's key)

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None and k != "symbol"}


@dataclass
class Unit:
    """What one lint run looks at: a tree, or the files of one patch."""

    label: str
    layout: str
    names: WalkerNames
    references: list[Reference]
    program: Program
    read: object  # rel -> bytes | None
    parsed: dict[str, ParsedFile] = field(default_factory=dict)
    only_lines: dict[str, set[int]] | None = None  # a patch: its added lines
    typed: bool = True  # False: a patch read without its tree (judge untyped bases by shape)
    patch: str | None = None
    edits: list | None = None  # old-layout tree: refactor.plan.rewrite's planned edits (the fixes)
    # A patch: per file, (first line, last line, function of git's hunk heading) of each hunk.
    sections: dict[str, list[tuple[int, int, str | None]]] = field(default_factory=dict)
    # Function -> roles of the walkers its body names (from the tree): the walker it works with.
    function_walkers: dict[str, frozenset[str]] = field(default_factory=dict)
    covered_edits: set[int] = field(default_factory=set)  # planned edits already reported by a rule
    moving: bool = False  # a patch for a tree that still has the old layout (old, or a move half done)
    _src: dict[str, bytes | None] = field(default_factory=dict)
    _lines: dict[str, list[bytes]] = field(default_factory=dict)

    def source(self, rel: str) -> bytes | None:
        if rel not in self._src:
            self._src[rel] = self.read(rel)
        return self._src[rel]

    def parsed_file(self, rel: str) -> ParsedFile | None:
        if rel not in self.parsed:
            src = self.source(rel)
            if src is None:
                return None
            self.parsed[rel] = parse(rel, src)
        return self.parsed[rel]

    def line_text(self, rel: str, line: int) -> str:
        lines = self._lines.get(rel)
        if lines is None:  # split once per file: per finding it was quadratic in a patch's size
            lines = self._lines[rel] = (self.source(rel) or b"").split(b"\n")
        return lines[line - 1].decode("utf-8", "replace") if 0 < line <= len(lines) else ""

    def wanted(self, rel: str, line: int) -> bool:
        return self.only_lines is None or line in self.only_lines.get(rel, ())


def is_mmu_type(type_text: str | None, lint: LintRules) -> bool:
    return bool(type_text) and type_text.split()[:2] == ["struct", lint.rules.types["mmu"]]


def bare_expr(expr: str) -> str:
    expr = squash(expr)
    while expr.startswith("(") and expr.endswith(")"):
        expr = expr[1:-1]
    return expr


def fix_text(fix: str | None) -> str:
    if fix is None:
        return "see rules/mappings.toml"
    fix = fix.strip("\n")
    if "\n" in fix:
        fix = fix.split("\n", 1)[0] + " ..."
    return f"`{fix}`" if fix else "delete the statement"


def make_finding(rule: LintRule, unit: Unit, file: str, line: int, column: int, expr: str,
                 function: str | None, fix: str | None, values: dict[str, str]) -> Finding:
    values = {**unit.names.as_dict(), "expr": expr, "fix": fix_text(fix), **values}
    template = rule.old_message if unit.layout == "old" and rule.old_message else rule.message
    return Finding(rule=rule.id, name=rule.name, severity=rule.severity, file=file, line=line,
                   column=column, message=rule.render(template, values),
                   help=rule.render(rule.help, values), expression=expr, function=function,
                   fix=fix, patch=unit.patch, symbol=values.get("symbol"))


def function_walkers(references: list[Reference], names: WalkerNames, rules=None) -> dict[str, frozenset[str]]:
    """Function -> roles of the vcpu walkers its body names (code only).

    In a tree the move is half done in, a function naming a walker may reach the
    other through a removed member that stands for it (layout.toml: walk_mmu and
    nested_mmu are the {gva} tables): `w = nested ? &vcpu->arch.{ngpa} :
    vcpu->arch.walk_mmu->w` works with both walkers.  A function naming removed
    members only (`mmu_is_nested()` compares walk_mmu) is not taken to walk.
    """
    roles = {names.gva: "gva", names.ngpa: "ngpa"}
    old = {m.name: m.walker for m in rules.vcpu_old.values() if m.removed and m.walker} if rules is not None else {}
    found: dict[str, set[str]] = defaultdict(set)
    through_old: dict[str, set[str]] = defaultdict(set)
    for r in references:
        if r.context == "code" and r.function and r.symbol in roles:
            found[r.function].add(roles[r.symbol])
        elif r.context == "code" and r.function and r.symbol in old:
            through_old[r.function].add(old[r.symbol])
    return {fn: frozenset(v | through_old[fn]) for fn, v in found.items()}


def fingerprint(findings: list[Finding], unit: Unit) -> list[Finding]:
    """Stable across line shifts: rule, file, function, the line's text, and its occurrence."""
    seen: dict[str, int] = defaultdict(int)
    for f in findings:
        # Not the expression: a tree's finding may show the rewriter's whole statement, a patch's the reference.
        body = "\0".join([f.rule, f.file, f.function or "", squash(unit.line_text(f.file, f.line))])
        h = hashlib.sha1(body.encode()).hexdigest()[:16]
        seen[h] += 1
        f.fingerprint = f"{h}:{seen[h]}"
    return findings

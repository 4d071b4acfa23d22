"""Rule documentation, generated from rules/lint.toml: `lint --explain`, docs/lint.md's
table, the pages docs/lint/KVMxxx.md and the SARIF rule descriptions all come from
each rule's `doc` (what it checks, why it is wrong, an example, the fix).

`python -m refactor.lint.docs` rewrites the docs; `--check` exits 1 when they are
stale (tests/test_lint_docs.py runs the same comparison).
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

from refactor.lint.registry import PLACEHOLDERS, LintRule, LintRules, load_lint_rules

DOCS = Path(__file__).resolve().parents[2] / "docs"
_BEGIN, _END = "<!-- rules:begin -->\n", "<!-- rules:end -->"


def _fill(lint: LintRules, text: str) -> str:
    """Walker names of the upstream preset in doc text ({gva}, {ngpa})."""
    names = lint.rules.presets["upstream"].as_dict()
    return re.sub(r"\{(gva|ngpa)\}", lambda m: names[m.group(1)], text)


def short_description(rule: LintRule, lint: LintRules) -> str:
    return rule.render(rule.message, {**PLACEHOLDERS, **lint.rules.presets["upstream"].as_dict()})


def fix_source(rule: LintRule) -> str:
    return ", ".join(f"`{k}`" if v is True else f"`{k}={v}`" if isinstance(v, str)
                     else f"`{k}={','.join(v)}`" for k, v in rule.fix.items())


def rule_page(rule: LintRule, lint: LintRules | None = None) -> str:
    """The markdown page of one rule (docs/lint/KVMxxx.md, `lint --explain`, SARIF help)."""
    lint = lint or load_lint_rules()
    d = rule.doc
    fill = lambda t: _fill(lint, t)  # noqa: E731
    return "\n".join([
        f"# {rule.id} {rule.name}",
        "",
        f"*{rule.severity}*, on {', '.join(rule.layouts)}-layout code. Reported as: "
        f"`{short_description(rule, lint)}`",
        "",
        "## What it does",
        "",
        fill(d.what),
        "",
        "## Why is this bad?",
        "",
        fill(d.why),
        "",
        "## Example",
        "",
        "```c",
        fill(d.example),
        "```",
        "",
        "## Use instead",
        "",
        "```c",
        fill(d.use_instead),
        "```",
        "",
        f"The suggested fix of each finding comes from {fix_source(rule)} (rules/lint.toml, "
        "computed through rules/mappings.toml and layout.toml with the walker names in force).",
        "",
    ])


def explain(rule_id: str, lint: LintRules | None = None) -> str:
    lint = lint or load_lint_rules()
    return rule_page(lint.by_id(rule_id.strip().upper()), lint)


def markdown_table(lint: LintRules | None = None) -> str:
    """The rules table of docs/lint.md."""
    lint = lint or load_lint_rules()
    rows = ["| id | name | severity | layouts | what | fix from |", "|---|---|---|---|---|---|"]
    for r in lint.items:
        what = short_description(r, lint).replace("|", "&#124;")
        rows.append(f"| [{r.id}](lint/{r.id}.md) | {r.name} | {r.severity} | {', '.join(r.layouts)} | "
                    f"{what} | {fix_source(r)} |")
    return "\n".join(rows) + "\n"


def generated(docs: Path = DOCS, lint: LintRules | None = None) -> dict[Path, str]:
    """Every generated file and its content."""
    lint = lint or load_lint_rules()
    out = {docs / "lint" / f"{r.id}.md": rule_page(r, lint) for r in lint.items}
    index = docs / "lint.md"
    text = index.read_text()
    start, end = text.find(_BEGIN), text.find(_END)
    if start < 0 or end < start:
        raise ValueError(f"{index}: the {_BEGIN.strip()} / {_END} markers are missing")
    out[index] = text[:start + len(_BEGIN)] + markdown_table(lint) + text[end:]
    return out


def stale(docs: Path = DOCS) -> list[Path]:
    """Generated files whose content differs from rules/lint.toml's, and rule pages of no rule."""
    want = generated(docs)
    bad = [p for p, text in want.items() if not p.is_file() or p.read_text() != text]
    bad += [p for p in sorted((docs / "lint").glob("KVM*.md")) if p not in want]
    return bad


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--check" in argv:
        bad = stale()
        for p in bad:
            print(f"{p}: out of date with rules/lint.toml (python -m refactor.lint.docs)", file=sys.stderr)
        return 1 if bad else 0
    want = generated()
    (DOCS / "lint").mkdir(exist_ok=True)
    for p in sorted((DOCS / "lint").glob("KVM*.md")):
        if p not in want:
            p.unlink()
    for p, text in want.items():
        p.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

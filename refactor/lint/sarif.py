"""SARIF 2.1.0 rendering of lint findings, as code-scanning services take it.

GitHub code scanning needs: tool.driver.name and rules (id, short
description, help, default level), and per result ruleId, level, message and
one physicalLocation with a repository-relative artifact URI and a region.
partialFingerprints lets the service track a finding across line shifts.
"""
from __future__ import annotations

from refactor import __version__
from refactor.lint.engine import Finding
from refactor.lint.registry import PLACEHOLDERS, LintRules

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
INFO_URI = "https://example.invalid/kvm-refactor/docs/lint.md"  # replaced by the project's page when published
from urllib.parse import quote



def _rule(rule, lint: LintRules) -> dict:
    help_text = rule.render(rule.help, {**lint.rules.presets["upstream"].as_dict(), "fix": "see each result"})
    return {
        "id": rule.id,
        "name": rule.name,
        "shortDescription": {"text": rule.name.replace("-", " ")},
        "fullDescription": {"text": rule.render(rule.message, {**PLACEHOLDERS,
                                                               **lint.rules.presets["upstream"].as_dict()})},
        "help": {"text": help_text},
        "defaultConfiguration": {"level": rule.severity},
        "properties": {"tags": ["kvm", "kvm_pagewalk"], "layouts": list(rule.layouts)},
    }


def to_sarif(findings: list[Finding], lint: LintRules, uri_base: str | None = None) -> dict:
    rules = [_rule(r, lint) for r in lint.items]
    index = {r.id: i for i, r in enumerate(lint.items)}
    results = []
    for f in findings:
        text = f.message + (f"; fix: {f.fix}" if f.fix else "; fix: delete the statement" if f.fix == "" else "")
        result = {
            "ruleId": f.rule,
            "ruleIndex": index[f.rule],
            "level": f.severity,
            "message": {"text": text},
            "locations": [{
                "physicalLocation": {
                    "artifactLocation": {"uri": artifact_uri(f.file), "uriBaseId": "%SRCROOT%"},
                    "region": {"startLine": f.line, "startColumn": f.column},
                },
            }],
            "partialFingerprints": {"kvmRefactorLint/v1": f.fingerprint},
        }
        if f.function:
            result["locations"][0]["logicalLocations"] = [{"name": f.function, "kind": "function"}]
        props = {"help": f.help}
        if f.patch:
            props["patch"] = f.patch
        result["properties"] = props
        results.append(result)
    run = {
        "tool": {"driver": {"name": "kvm-refactor", "version": __version__, "semanticVersion": __version__,
                            "informationUri": INFO_URI, "rules": rules}},
        "results": results,
        "columnKind": "utf16CodeUnits",
    }
    if uri_base:
        run["originalUriBaseIds"] = {"%SRCROOT%": {"uri": uri_base}}
    return {"$schema": SCHEMA, "version": "2.1.0", "runs": [run]}


def artifact_uri(path: str) -> str:
    """A relative URI reference (RFC 3986) for a file name: space, %, #, ?, newline... percent-encoded."""
    return quote(path.encode("utf-8", "surrogateescape"), safe="/-._~")

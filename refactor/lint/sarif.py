"""SARIF 2.1.0 rendering of lint findings, as code-scanning services take it.

GitHub code scanning needs: tool.driver.name and rules (id, short
description, help, default level), and per result ruleId, level, message and
one physicalLocation with a repository-relative artifact URI and a region.
partialFingerprints lets the service track a finding across line shifts.

Each rule carries its generated documentation (refactor.lint.docs): the
message pattern as shortDescription, what it checks as fullDescription, the
whole page (what, why, example, fix) as help markdown.  There is no helpUri
and no informationUri: the project has no public home, and a path inside the
repository is not a URI a code-scanning service can open (docs/lint.md).
"""
from __future__ import annotations

from urllib.parse import quote

from refactor import __version__
from refactor.lint.engine import Finding
from refactor.lint.docs import rule_page, short_description
from refactor.lint.registry import LintRules

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"


def _plain(markdown: str) -> str:
    return markdown.replace("`", "")


def _rule(rule, lint: LintRules) -> dict:
    page = rule_page(rule, lint)
    what = page.split("## What it does\n\n", 1)[1].split("\n\n", 1)[0]
    return {
        "id": rule.id,
        "name": rule.name,
        "shortDescription": {"text": short_description(rule, lint)},
        "fullDescription": {"text": _plain(what), "markdown": what},
        "help": {"text": _plain(page), "markdown": page},
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
                            "rules": rules}},
        "results": results,
        "columnKind": "utf16CodeUnits",
    }
    if uri_base:
        run["originalUriBaseIds"] = {"%SRCROOT%": {"uri": uri_base}}
    return {"$schema": SCHEMA, "version": "2.1.0", "runs": [run]}


def artifact_uri(path: str) -> str:
    """A relative URI reference (RFC 3986) for a file name: space, %, #, ?, newline... percent-encoded."""
    return quote(path.encode("utf-8", "surrogateescape"), safe="/-._~")

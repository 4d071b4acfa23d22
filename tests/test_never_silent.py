"""Never silent: every code occurrence of a moved name ends as an edit or a human site.

Each fixture in fixtures/never-silent/ is one C pattern that made the parser
give up in a real fork (a label before #endif, a statement or brace split by
#ifdef/#else, a tracepoint DSL).  The tree is fixtures/mini-kvm plus that
file; the lexer, independently of the planner, lists every occurrence of a
name the layout change moves, and each must be inside an edit or on a line
reported for a human.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import FIXTURE_TREE, REPO
from refactor.cli.app import main
from refactor.frontend.lexer import tokens
from refactor.frontend.parse import parse
from refactor.index.indexer import build_index
from refactor.plan.coverage import moved_names
from refactor.plan.rewrite import plan_rewrite
from refactor.rules import load_rules

PATTERNS = REPO / "fixtures" / "never-silent"
OVERLAY = REPO / "fixtures" / "rules-overlay"
PATTERN_FILES = sorted(p.name for p in PATTERNS.glob("*.c"))
# Patterns the parser now reads whole (no error region left).
PARSED_WHOLE = ["branch_braces.c", "else_branch.c", "label_endif.c", "split_statement.c"]


@pytest.fixture(autouse=True)
def _no_overlay_left():
    yield
    from refactor.rules_overlay import activate

    activate(None)


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def tree_with(tmp_path: Path, pattern: str) -> Path:
    tree = tmp_path / "tree"
    shutil.copytree(FIXTURE_TREE, tree)
    shutil.copy(PATTERNS / pattern, tree / "arch/x86/kvm/mmu" / pattern)
    return tree


def gcc_syntax(tree: Path, rel: str) -> str:
    proc = subprocess.run(["gcc", "-fsyntax-only", "-Wall", "-Wno-unused-function", "-Wno-unused-variable",
                           "-Wno-unused-label", "-Werror", "-I", "include", "-I", "arch/x86/include", rel],
                          cwd=tree, capture_output=True, text=True)
    return proc.stderr if proc.returncode else ""


@pytest.mark.parametrize("pattern", PATTERN_FILES)
def test_every_moved_name_is_an_edit_or_a_human_site(tmp_path, pattern):
    tree = tree_with(tmp_path, pattern)
    rules = load_rules()
    plan = plan_rewrite(tree, "upstream", rules)
    rel = f"arch/x86/kvm/mmu/{pattern}"
    src = (tree / rel).read_bytes()
    edits = [(e.start, e.end) for e in plan.edits if e.file == rel]
    human_lines = {h.line for h in plan.humans if h.file == rel}
    names = moved_names(rules)
    found = [t for t in tokens(src, frozenset(names)) if t.context == "code"]
    assert found, "the fixture must use names the layout change moves"
    silent = []
    for t in found:
        line = src.count(b"\n", 0, t.start) + 1
        if not any(s <= t.start < e for s, e in edits) and line not in human_lines:
            silent.append((line, t.name))
    assert silent == [], f"{pattern}: occurrences neither rewritten nor reported: {silent}"


@pytest.mark.parametrize("pattern", PARSED_WHOLE)
def test_conditionals_in_functions_parse(pattern):
    src = (PATTERNS / pattern).read_bytes()
    assert parse(pattern, src).error_spans == []


@pytest.mark.parametrize("pattern", PARSED_WHOLE)
def test_conditional_patterns_rewrite_fully_and_compile(tmp_path, pattern):
    tree = tree_with(tmp_path, pattern)
    res = run("rewrite", tree, "--in-place")
    assert res.exit_code == 0, res.stderr
    rel = f"arch/x86/kvm/mmu/{pattern}"
    text = (tree / rel).read_text()
    assert "walk_mmu" not in text and "pkru_mask;" not in text.replace("fmt.pkru_mask", "")
    assert gcc_syntax(tree, rel) == ""
    again = run("rewrite", tree)
    assert again.exit_code == 0 and again.stdout == "", "not idempotent"


def test_else_branch_is_rewritten_from_its_own_tree(tmp_path):
    tree = tree_with(tmp_path, "branch_braces.c")
    plan = plan_rewrite(tree, "upstream", load_rules())
    new = plan.results["arch/x86/kvm/mmu/branch_braces.c"].decode()
    assert "mask |= vcpu->arch.gva_walk.fmt.pkru_mask;" in new  # #ifdef branch
    assert "mask = vcpu->arch.gva_walk.fmt.pkru_mask;" in new  # #else branch


def test_unreadable_code_is_token_rewritten_or_reported(tmp_path):
    tree = tree_with(tmp_path, "unreadable.c")
    res = run("rewrite", tree)
    assert res.exit_code == 3
    rel = "arch/x86/kvm/mmu/unreadable.c"
    assert "+\t\t__entry->mask = vcpu->arch.gva_walk.fmt.pkru_mask;" in res.stdout
    lines = [ln for ln in res.stderr.splitlines() if "needs a human" in ln]
    assert lines == [ln for ln in lines if ln.startswith(f"{rel}:16: ")] and len(lines) == 1
    assert "walk_mmu is removed" in lines[0] and "parser could not read" in lines[0]


def test_unknown_fields_are_reported_once_at_declaration_and_at_each_use(tmp_path):
    tree = fork_tree(tmp_path)
    res = run("rewrite", tree)
    assert res.exit_code == 3
    human = [ln for ln in res.stderr.splitlines() if "pkr_mask" in ln]
    decl = [ln for ln in human if "is not placed by rules/" in ln]
    assert len(decl) == 1 and decl[0].startswith("arch/x86/include/asm/kvm_host.h:")
    uses = sum(1 for rel in ("arch/x86/kvm/mmu.h", "arch/x86/kvm/mmu/mmu.c", "arch/x86/kvm/mmu/pkr_helper.c")
               for ln in (tree / rel).read_text().splitlines() if "pkr_mask" in ln)
    assert len([ln for ln in human if "use of struct kvm_mmu member pkr_mask" in ln]) == uses


def fork_tree(tmp_path: Path) -> Path:
    """mini-kvm as the fork of docs/rules-overlay.md: pkru_mask renamed, a helper added."""
    tree = tmp_path / "fork"
    shutil.copytree(FIXTURE_TREE, tree)
    for path in tree.rglob("*.[ch]"):
        text = path.read_text()
        if "pkru_mask" in text:
            path.write_text(text.replace("pkru_mask", "pkr_mask"))
    shutil.copy(OVERLAY / "pkr_helper.c", tree / "arch/x86/kvm/mmu/pkr_helper.c")
    return tree


def test_rules_overlay_places_a_forks_field(tmp_path):
    tree = fork_tree(tmp_path)
    res = run("rewrite", "--rules", OVERLAY / "fork.toml", tree, "--in-place")
    assert res.exit_code == 0, res.stderr
    helper = (tree / "arch/x86/kvm/mmu/pkr_helper.c").read_text()
    assert "static bool pkr_enabled(struct kvm_pagewalk *w)" in helper
    assert "return w->fmt.pkr_mask != 0;" in helper
    assert "pkr_enabled(&vcpu->arch.gva_walk)" in helper
    assert "u32 pkr_mask;" in (tree / "arch/x86/include/asm/kvm_host.h").read_text()
    assert gcc_syntax(tree, "arch/x86/kvm/mmu/pkr_helper.c") == ""


@pytest.mark.parametrize("command", ["scan", "lint"])
def test_other_commands_take_the_overlay(tmp_path, command):
    tree = fork_tree(tmp_path)
    args = ["--rules", OVERLAY / "fork.toml", tree]
    res = run(command, *args)
    assert res.exit_code in (0, 1), res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("text,message", [
    ('[layout.mmu_fields.pkr_mask]\ndest = "elsewhere"\n', "dest must be walker or mmu"),
    ('[layuot.mmu_fields.pkr_mask]\ndest = "walker"\n', "names no rules file"),
    ('[layout.mmu_fields.pkr_mask\n', "bad.toml"),
    ('[macros.macros]\nattributes = ["not an identifier"]\n', "expected a list of C identifiers"),
])
def test_bad_overlay_is_one_line_exit_2(tmp_path, text, message):
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    res = run("rewrite", "--rules", bad, FIXTURE_TREE)
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in res.stderr


def test_overlay_directory_and_macro_file(tmp_path):
    # A fork attribute the parser does not know hides a function from the typed
    # rewrite; the fork's macros.toml makes it plain C again.
    tree = tree_with(tmp_path, "else_branch.c")
    rel = tree / "arch/x86/kvm/mmu/else_branch.c"
    rel.write_text(rel.read_text().replace("static u16 else_perm(", "static u16 __fork_hot(1) else_perm("))
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "macros.toml").write_text('[macros]\nattributes_with_args = ["__fork_hot"]\n')
    without = run("rewrite", tree)
    assert without.exit_code == 3 and "else_branch.c:7: needs a human" in without.stderr
    res = run("rewrite", "--rules", rules_dir, tree)
    assert res.exit_code == 0, res.stderr
    assert re.search(r"^\+\tstruct kvm_pagewalk \*\w+ = &vcpu->arch.gva_walk;$", res.stdout, re.M)


def test_walk_only_mmu_is_never_silently_redirected(tmp_path):
    # fork_walk() walks its MMU but also reads a builder field, so it keeps its
    # struct kvm_mmu *: nested_mmu passed there must not become root_mmu.
    tree = tree_with(tmp_path, "nested_walk_blocked.c")
    res = run("rewrite", tree)
    assert res.exit_code == 3
    rel = "arch/x86/kvm/mmu/nested_walk_blocked.c"
    assert f"{rel}:18: needs a human: fork_walk() walks its argument 1 but cannot take a walker" in res.stderr
    section = res.stdout.split(f"+++ b/{rel}", 1)[1].split("\ndiff --git", 1)[0]
    assert "root_mmu" not in section


def test_scan_names_unplaced_members(tmp_path):
    tree = fork_tree(tmp_path)
    assert "unplaced: struct kvm_mmu pkr_mask" in run("scan", "--no-cache", tree).stdout
    assert "unplaced:" not in run("scan", "--no-cache", "--rules", OVERLAY / "fork.toml", tree).stdout


def test_an_unknown_mmu_member_of_vcpu_arch_is_reported(tmp_path):
    tree = tree_with(tmp_path, "else_branch.c")
    header = tree / "arch/x86/include/asm/kvm_host.h"
    header.write_text(header.read_text().replace("\tstruct kvm_mmu guest_mmu;\n",
                                                 "\tstruct kvm_mmu guest_mmu;\n\tstruct kvm_mmu introspect_mmu;\n"))
    res = run("rewrite", tree)
    assert res.exit_code == 3
    assert "kvm_host.h" in res.stderr and "introspect_mmu (an MMU or walker) is not placed" in res.stderr


def test_declaration_typed_token_rules(tmp_path):
    # Lexer-only text: `mmu->pkru_mask` on a declared struct kvm_mmu * the function keeps,
    # and the old format type, are rewritten from the declarations.
    tree = tree_with(tmp_path, "typed_tokens.c")
    plan = plan_rewrite(tree, "upstream", load_rules())
    rel = "arch/x86/kvm/mmu/typed_tokens.c"
    assert [h for h in plan.humans if h.file == rel] == []
    new = plan.results[rel].decode()
    assert "sizeof(struct kvm_page_format)" in new and "rsvd_bits_validate" not in new
    assert "mmu->pkru_mask" not in new and ("mmu->w->fmt.pkru_mask" in new or "w->fmt.pkru_mask" in new)

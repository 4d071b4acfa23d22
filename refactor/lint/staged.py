"""Lint for a pre-commit hook: the staged changes to some files, or the files themselves.

pre-commit passes the names of the files a commit touches.  On a commit the
staged diff of those files is linted (only the lines it adds), with the work
tree as `--tree`.  `pre-commit run --all-files` passes every matching file
and nothing is staged: the files are then linted as they are, through the
tree's index, so the hook judges the tree rather than failing on an empty
diff.
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from refactor.frontend.source import TreeError
from refactor.lint.engine import Finding, lint_patches, lint_tree
from refactor.lint.registry import LintRules, load_lint_rules


@dataclass
class StagedResult:
    mode: str  # "staged": the staged diff was linted; "files": the files as they are
    findings: list[Finding]
    warnings: list[str] = field(default_factory=list)


def staged_diff(files: list[str], root: str | Path = ".") -> str:
    """`git diff --cached` of FILES in the work tree ROOT (text, possibly empty)."""
    if not files:
        return ""
    try:
        proc = subprocess.run(["git", "diff", "--cached", "--no-color", "--no-ext-diff", "-U3", "--", *files],
                              cwd=root, capture_output=True, text=True, errors="replace", check=False)
    except FileNotFoundError:
        raise TreeError("git: command not found (the staged mode reads `git diff --cached`)") from None
    if proc.returncode != 0:
        raise TreeError(f"{root}: git diff --cached failed: {proc.stderr.strip().splitlines()[-1:] or '?'}")
    return proc.stdout


def lint_staged(files: list[str], root: str | Path = ".", names: str | None = None, use_cache: bool = True,
                lint: LintRules | None = None) -> StagedResult:
    """Findings of the staged changes to FILES, or of FILES themselves when none is staged."""
    from refactor.index.indexer import scan_tree

    lint = lint or load_lint_rules()
    root = Path(root)
    diff = staged_diff(files, root)
    if diff.strip():
        tree = scan_tree(root, lint.rules, use_cache=use_cache)
        return StagedResult("staged", lint_patches(diff, "staged changes", tree=tree, tree_root=root,
                                                   names=names, lint=lint))
    wanted = {Path(f).as_posix().removeprefix("./") for f in files}
    warnings: list[str] = []
    if not wanted:
        return StagedResult("files", [], warnings)
    _, found = lint_tree(root, names=names, use_cache=use_cache, lint=lint, warnings=warnings)
    return StagedResult("files", [f for f in found if f.file in wanted], warnings)

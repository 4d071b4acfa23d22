"""`lint` as units: one unit per PATH (a tree, or a patch's text).

Each PATH is linted on its own (a tree by lint_tree, a patch by lint_patches
against the --tree index), so a PATH is a unit: its findings, warnings and
the tree's layout and version come back as data, in the order of the PATHs.
A patch is read here (stdin, pipes) and its text travels with the unit; the
--tree index is read on the worker from the content-hash cache.  A PATH's
bad input comes back as data and the first in PATH order is raised.

Patches alone take milliseconds each: without an explicit --jobs they are
linted in this process (a worker pool costs more to start than they take).
"""
from __future__ import annotations

from typing import Callable

from refactor.errors import PatchError, RulesError, TreeError

from . import Unit, current_context, run_units

TASK = "refactor.execute.lint_units:lint_unit"


def lint_unit(kind: str, path: str, text: str | None, name: str | None, names: str | None,
              use_cache: bool, tree: str | None) -> dict:
    from refactor import lint_patches, lint_tree, scan_tree
    from refactor.lint.registry import load_lint_rules

    try:
        lint = load_lint_rules()
        if kind == "tree":
            warnings: list[str] = []
            index, found = lint_tree(path, names=names, use_cache=use_cache, lint=lint,
                                     warnings=warnings)
            return {"findings": found, "warnings": warnings, "layout": index.layout,
                    "version": index.version}
        tree_index = scan_tree(tree, lint.rules, use_cache=use_cache) if tree else None
        return {"findings": lint_patches(text, name, tree=tree_index, tree_root=tree, names=names,
                                         lint=lint)}
    except (TreeError, PatchError, RulesError) as exc:
        return {"error": exc}


def run_lint(inputs: list[tuple[str, str, str | None, str | None]], *, names: str | None,
             use_cache: bool, tree: str | None, jobs: int | None = None,
             cluster: str | None = None, progress: Callable | None = None) -> list[dict]:
    """Lint each (kind, path, text, name) input; one result dict per input, in order."""
    ctx = current_context()
    units = [Unit(f"lint-{k}", TASK, {"kind": kind, "path": path, "text": text, "name": name,
                                      "names": names, "use_cache": use_cache, "tree": tree}, ctx)
             for k, (kind, path, text, name) in enumerate(inputs)]
    if jobs is None and not cluster and all(kind == "patch" for kind, *_ in inputs):
        jobs = 1
    step = progress or (lambda label=None, n=1: None)
    results = run_units(units, jobs=jobs, cluster=cluster, on_result=lambda uid, r: step(uid))
    return [results[u.id] for u in units]

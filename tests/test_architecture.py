"""The package's shape: import graph without cycles, no private names across modules,
a thin CLI over the public API, modules a reader can hold.

Every import counts, including those inside functions (a late import hides a
cycle from Python, not from a reader).  Exceptions are listed below, each with
its reason; a new one must be added here on purpose.
"""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("refactor", "emulator")

# Import edges left out of the cycle check, and why.
ALLOWED_CYCLE_EDGES = {
    ("refactor.rules", "refactor.rules_overlay"):
        "a user's --rules overlay is applied as each rules file is read; rules_overlay validates "
        "overlays with the loaders it overlays (REALTREES, issue 9 follow-up: pass the overlay in)",
    ("refactor.lint.registry", "refactor.lint.shapes"):
        "lint patterns are validated against the shape handlers that exist",
    ("refactor.lint.registry", "refactor.lint.references"):
        "lint patterns are validated against the handlers that exist (rewrite-site is there)",
    ("refactor.lint.registry", "refactor.lint.docs"):
        "LintRules.markdown_table() delegates to docs.markdown_table (PKG: callers can import docs)",
}

# (importing module, imported module, name): private names imported across modules, and why.
ALLOWED_PRIVATE = {
    ("refactor.lint.shapes", "refactor.frontend.parse", "_PARSER"):
        "PKG/REALTREES: a public parse_fragment() in frontend.parse",
}

# Modules the CLI may import besides the package's public API (refactor, refactor.errors)
# and its own modules: each is the library entry point of one command.
CLI_ENTRY_MODULES = {
    "refactor.progress": "progress bars are presentation",
    "refactor.index.report": "scan's text and JSON renderings",
    "refactor.lint.sarif": "lint's SARIF rendering",
    "refactor.lint.registry": "lint --list-rules",
    "refactor.lint.staged": "lint --staged (pre-commit)",
    "refactor.kernel.fetch": "fetch-tree",
    "refactor.kernel.build": "build-check",
    "refactor.apply.inplace": "rewrite --in-place: git checks and recovery",
    "refactor.rules_overlay": "--rules overlays",
    "refactor.port.engine": "port",
    "refactor.port.output": "port's report",
    "refactor.verify": "verify",
    "refactor.verify.check": "verify",
    "refactor.verify.fidelity": "verify --fidelity",
    "refactor.verify.mutants": "verify --mutants",
    "refactor.verify.trees": "verify",
    "refactor.lint.docs": "lint --docs: the rule documentation",
    "refactor.frontend.source": "rewrite --in-place reads a tree file safely (read_tree_file)",
    "refactor.series.generate": "series: PostOptions (generate is refactor.generate_series)",
    "refactor.execute": "--jobs/--cluster: the execution layer's errors and job count",
    "refactor.execute.port_matrix": "port: the matrix as units (refactor.execute)",
    "refactor.execute.verify_steps": "verify: the steps as units (refactor.execute)",
    "refactor.execute.lint_units": "lint: files and patches as units (refactor.execute)",
}

MAX_LINES = 500
# Modules over MAX_LINES, and why they are not split (yet).
LONG_MODULES: dict[str, str] = {}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, str | None]]:
    """(module imported, name imported from it or None) for every import in a module."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                pkg = pkg[:len(pkg) - node.level + 1]
                base = ".".join(pkg + ([base] if base else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.append((sub, None) if sub in MODULES else (base, a.name))
    return out


def _owner(target: str) -> str | None:
    """The module of ours an import resolves to (a package's __init__ for its name)."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


def _graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for name, path in MODULES.items():
        for target, _ in _imports(name, path):
            owner = _owner(target)
            if owner and owner != name and (name, owner) not in ALLOWED_CYCLE_EDGES:
                edges[name].add(owner)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_graph_is_read():
    edges = _graph()
    # A check that cannot fail is no check: the graph has the edges everyone knows.
    assert "refactor.rules" in edges["refactor.plan.translate"]
    assert "refactor.index.indexer" in edges["refactor.plan.rewrite"]
    # And a cycle is found when there is one.
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    cycles = _cycles(_graph())
    assert cycles == [], "import cycles (break them, or list an edge in ALLOWED_CYCLE_EDGES with why): " \
        + "; ".join(" <-> ".join(c) for c in cycles)


def test_no_private_names_across_modules():
    found = []
    for name, path in MODULES.items():
        for target, imported in _imports(name, path):
            owner = _owner(target)
            if owner and owner != name and imported and imported.startswith("_") \
                    and not imported.startswith("__") and (name, owner, imported) not in ALLOWED_PRIVATE:
                found.append(f"{name} imports {owner}.{imported}")
    assert found == []


def test_cli_imports_only_the_public_api():
    found = []
    for name, path in MODULES.items():
        if not name.startswith("refactor.cli"):
            continue
        for target, _ in _imports(name, path):
            owner = _owner(target)
            if owner is None or owner in ("refactor", "refactor.errors") or owner.startswith("refactor.cli") \
                    or owner in CLI_ENTRY_MODULES or owner.startswith("emulator"):
                continue
            found.append(f"{name} imports {owner}")
    assert found == [], "the CLI is a thin layer over the public API (refactor.__all__)"


def test_cli_commands_do_not_import_each_other():
    """Command modules share refactor.cli.errors/guard/rules_option, not each other (app mounts them)."""
    shared = {"refactor.cli.errors", "refactor.cli.guard", "refactor.cli.rules_option", "refactor.cli"}
    found = []
    for name, path in MODULES.items():
        if not name.startswith("refactor.cli.") or name in shared | {"refactor.cli.app"}:
            continue
        for target, _ in _imports(name, path):
            owner = _owner(target)
            if owner and owner.startswith("refactor.cli") and owner not in shared and owner != name:
                found.append(f"{name} imports {owner}")
    assert found == []


def test_modules_are_short():
    long = {name: n for name, path in MODULES.items()
            if (n := len(path.read_text().splitlines())) > MAX_LINES and name not in LONG_MODULES}
    assert long == {}, f"modules over {MAX_LINES} lines (split, or list in LONG_MODULES with why)"
    stale = [name for name in LONG_MODULES
             if name not in MODULES or len(MODULES[name].read_text().splitlines()) <= MAX_LINES]
    assert stale == [], "LONG_MODULES entries no longer needed: remove them"


def test_public_api():
    import refactor

    assert {"load_rules", "scan_tree", "index_sources", "plan_rewrite", "write_plan", "lint_tree",
            "lint_patches", "RulesError", "RefactorError"} <= set(refactor.__all__)
    for name in refactor.__all__:
        assert getattr(refactor, name) is not None, name
    with pytest.raises(AttributeError):
        refactor.no_such_name  # noqa: B018
    # The errors keep their historic homes and builtin bases.
    assert importlib.import_module("refactor.rules").RulesError is refactor.RulesError
    assert importlib.import_module("refactor.kernel.fetch").FetchError is refactor.FetchError
    assert issubclass(refactor.RulesError, ValueError) and issubclass(refactor.TreeError, refactor.RefactorError)


def test_index_sources_is_what_build_index_says(mini_index):
    import refactor

    rel = "arch/x86/kvm/mmu/mmu.c"
    data = (ROOT / "fixtures" / "mini-kvm" / rel).read_bytes()
    memory = refactor.index_sources({rel: data.decode()}, program=mini_index.program)
    on_disk = [r.to_json() for r in mini_index.references if r.file == rel]
    assert on_disk and [r.to_json() for r in memory.references] == on_disk

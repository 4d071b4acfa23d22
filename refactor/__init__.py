"""kvm-refactor as a library: the public surface, every name below returning typed results.

    import refactor
    rules = refactor.load_rules()                       # rules/ as typed objects (Rules)
    index = refactor.scan_tree("linux", rules)          # Index of a tree (cached by content)
    memory = refactor.index_sources({"arch/x86/kvm/x.c": text}, rules)   # Index of in-memory files
    plan = refactor.plan_rewrite("linux", "upstream", rules)             # Plan: edits, sites for humans
    print(plan.diff()); refactor.write_plan(plan)       # the diff, or the tree rewritten in place
    findings = refactor.lint_tree("linux")              # list[Finding]
    text, name = refactor.read_patch_file("x.patch")   # a patch file or pipe, checked
    findings = refactor.lint_patches(text, name)
    report = refactor.port_patches(refactor.read_mails(mbox_text), ["linux-6.1"])   # PortReport

Everything else (refactor.plan.translate, refactor.index.program...) is the
engine: importable, but not a promise.  Errors are in refactor.errors, all
derived from RefactorError.  Names are loaded on first use (PEP 562), so
`import refactor` stays cheap and the package imports none of its modules
eagerly (no import cycle through this file).
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    # rules/
    "load_rules": "refactor.rules",
    "Rules": "refactor.rules",
    "WalkerNames": "refactor.rules",
    "RuleEntry": "refactor.rules",
    "load_steps": "refactor.rules",
    "staged": "refactor.rules",
    # index: a tree on disk, or files in memory
    "scan_tree": "refactor.index.indexer",
    "build_index": "refactor.index.indexer",
    "index_sources": "refactor.index.indexer",
    "Index": "refactor.index.indexer",
    "Reference": "refactor.index.indexer",
    # plan and apply
    "plan_rewrite": "refactor.plan.rewrite",
    "cached_plan": "refactor.plan.rewrite",
    "write_plan": "refactor.plan.rewrite",
    "Plan": "refactor.plan.rewrite",
    "Edit": "refactor.plan.edits",
    "Human": "refactor.plan.edits",
    "HumanSite": "refactor.plan.edits",
    "apply_edits": "refactor.apply.splice",
    "unified_diffs": "refactor.apply.splice",
    # lint
    "lint_tree": "refactor.lint.engine",
    "lint_patches": "refactor.lint.engine",
    "read_patch_file": "refactor.frontend.patch",
    "Finding": "refactor.lint.engine",
    # series of commits
    "generate_series": "refactor.series.generate",
    # port: patches across the layout change
    "read_mails": "refactor.port.mail",
    "port_patches": "refactor.port.engine",
    "PortReport": "refactor.port.engine",
    "prove_port": "refactor.port.proof",
    "port_source_files": "refactor.port.proof",
    "PortProof": "refactor.port.proof",
    # verify: the product executed natively (emulator/native)
    "verify_tree": "refactor.verify.check",
    "verify_branch": "refactor.verify.check",
    "VerifyReport": "refactor.verify.check",
    "run_mutants": "refactor.verify.mutants",
    "model_fidelity": "refactor.verify.fidelity",
    # errors
    "RefactorError": "refactor.errors",
    "RulesError": "refactor.errors",
    "TreeError": "refactor.errors",
    "PatchError": "refactor.errors",
    "EditConflict": "refactor.errors",
    "BuildError": "refactor.errors",
    "SeriesError": "refactor.errors",
    "FetchError": "refactor.errors",
    "VerifyError": "refactor.errors",
}
# Public names whose definition has another name in its module.
_RENAMED = {"apply_edits": "apply", "generate_series": "generate"}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'refactor' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), _RENAMED.get(name, name))
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))

"""The lint corpus: real-looking patches (and one small old-layout tree), annotated semgrep-style.

A comment `/* ruleid: KVM0NN[, ...] */` says the next line must be reported
under those rules; `/* ok: KVM0NN */` documents a line that must not be;
`ruleid[no-tree]:` holds only in that mode (with the whole function from the
tree, KVM011 can name the translation that KVM013 can only suspect).
Every finding must be annotated and every annotation found: zero false
positives and zero false negatives.  A patch's `Lint-Corpus:` trailer says how
it is linted: `no-tree`, and/or `tree-7.3` (with the real 7.3 tree as --tree).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from refactor.lint.engine import lint_patches, lint_tree
from refactor.lint.registry import load_lint_rules
from refactor.frontend.patch import parse_patches

CORPUS = Path(__file__).resolve().parent / "lint_corpus"
ANNOTATION = re.compile(r"(?://|/\*)\s*(ruleid|ok)(?:\[([\w.-]+)\])?:\s*(KVM\d{3}(?:\s*,\s*KVM\d{3})*)")
PATCHES = sorted(CORPUS.glob("*.patch"))


def _modes(text: str) -> list[str]:
    m = re.search(r"^Lint-Corpus:\s*(.+)$", text, re.M)
    return m.group(1).split() if m else ["no-tree"]


def _annotations(lines, mode: str = "no-tree"):
    """(line, text) pairs in order -> ({(line, rule)} expected, {(line, rule)} documented ok)."""
    want, ok = set(), set()
    pending = []
    for n, text in lines:
        for kind, ids in pending:
            (want if kind == "ruleid" else ok).update((n, i) for i in ids)
        pending = [(m.group(1), [i.strip() for i in m.group(3).split(",")])
                   for m in ANNOTATION.finditer(text) if m.group(2) in (None, mode)]
    return want, ok


def _patch_expectations(text: str, mode: str):
    """Expected findings, at the patch's own line numbers."""
    want, ok = set(), set()
    for patch in parse_patches(text, "corpus"):
        for fp in patch.files:
            for h in fp.hunks:
                lines = [(n, t) for tag, t, n in h.lines if tag != "-"]
                w, o = _annotations(lines, mode)
                want |= {(fp.new_path, n, r) for n, r in w}
                ok |= {(fp.new_path, n, r) for n, r in o}
    return want, ok


CASES = [(p, mode) for p in PATCHES for mode in _modes(p.read_text())]


@pytest.mark.parametrize("path,mode", CASES, ids=[f"{p.stem}[{m}]" for p, m in CASES])
def test_corpus_patch(path, mode, request):
    text = path.read_text()
    want, ok = _patch_expectations(text, mode)
    assert ANNOTATION.search(text), f"{path.name}: no annotation"
    tree = root = None
    if mode == "tree-7.3":
        root = request.getfixturevalue("trees")["7.3"]
        tree = _tree_index(root)
    found = lint_patches(text, path.name, tree=tree, tree_root=root)
    # Reported lines are the patched file's: where the hunk applied in the tree, maybe a few lines off.
    got = {(f.file, f.line - _offset(text, f.file, root), f.rule) for f in found}
    assert got - want == set(), f"false positives: {sorted(got - want)}"
    assert want - got == set(), f"false negatives: {sorted(want - got)}"
    assert not (got & ok)


def _offset(text: str, rel: str, root) -> int:
    """How far the (single-hunk) patch of `rel` applied from its header's line in the tree."""
    if root is None:
        return 0
    (fp,) = [fp for p in parse_patches(text, "corpus") for fp in p.files if fp.new_path == rel]
    original = (Path(root) / rel).read_text(errors="replace")
    h = fp.hunks[0]
    want = [t for tag, t, _ in h.lines if tag != "+"]
    lines = original.split("\n")
    for d in sorted(range(-50, 51), key=abs):
        at = h.old_start - 1 + d
        if at >= 0 and lines[at:at + len(want)] == want:
            return d
    return 0  # did not apply: linted from the hunks, at their own line numbers


_TREE_INDEX = {}


def _tree_index(root):
    from refactor.index.indexer import scan_tree

    if root not in _TREE_INDEX:
        _TREE_INDEX[root] = scan_tree(root, load_lint_rules().rules)
    return _TREE_INDEX[root]


def test_corpus_tree_old_layout():
    """KVM100 and the old_message of KVM001-KVM004 need an old-layout tree: a small one, ours."""
    root = CORPUS / "trees" / "old-layout"
    want = set()
    for f in sorted(root.rglob("*.[ch]")):
        rel = f.relative_to(root).as_posix()
        w, _ = _annotations(enumerate(f.read_text().split("\n"), 1), "tree")
        want |= {(rel, n, r) for n, r in w}
    index, found = lint_tree(root, use_cache=False)
    assert index.layout == "old"
    got = {(f.file, f.line, f.rule) for f in found}
    assert got - want == set(), f"false positives: {sorted(got - want)}"
    assert want - got == set(), f"false negatives: {sorted(want - got)}"


def test_every_rule_has_a_bad_case():
    ids = {r.id for r in load_lint_rules().items}
    texts = [p.read_text() for p in PATCHES] + [f.read_text() for f in (CORPUS / "trees").rglob("*.[ch]")]
    annotated = {i.strip() for t in texts for m in ANNOTATION.finditer(t) if m.group(1) == "ruleid"
                 for i in m.group(3).split(",")}
    assert ids - annotated == set(), "rules without a corpus case"
    assert annotated - ids == set(), "annotations naming no rule"


def test_walker_parameters_are_73s(trees):
    """[settings] walker_parameters (used without --tree) is exactly 7.3's narrowed signatures."""
    lint = load_lint_rules()
    index = _tree_index(trees["7.3"])
    walker = f"struct {lint.rules.types['walker']}"
    real = {}
    for name, sig in index.program.functions.items():
        idx = tuple(i for i, (_, t) in enumerate(sig.params) if t.name == walker and t.depth == 1)
        if idx:
            real[name] = idx
    assert lint.settings.walker_parameters == real

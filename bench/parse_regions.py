"""How much of each real tree the parser cannot read, with and without the
preprocessor-conditional pass (refactor/frontend/conditionals.py).

Prints, per tree, the number of error regions and their bytes.  Names inside
them are still read by the lexer (and rewritten by token rules or reported);
fewer bytes means more of the tree gets the typed rewrite.

    .venv/bin/python bench/parse_regions.py [TREE...]   (default: the bundled test trees)
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from refactor.frontend import conditionals, parse  # noqa: E402
from refactor.frontend.source import discover  # noqa: E402


def _off(parser, text, tree, errors):
    return tree, errors, [], []


def measure(tree: Path) -> dict[str, tuple[int, int]]:
    files = [sf for sf in discover(tree) if not sf.problem]
    out = {}
    real = conditionals.reduce_errors
    try:
        for mode, fn in (("plain", _off), ("conditionals", real)):
            conditionals.reduce_errors = fn
            regions = size = 0
            for sf in files:
                pf = parse.parse(sf.rel, sf.data, want_macros=False)
                regions += len(pf.error_spans)
                size += sum(e - s for s, e in pf.error_spans)
            out[mode] = (regions, size)
    finally:
        conditionals.reduce_errors = real
    return out


def main(argv: list[str]) -> None:
    trees = [Path(a) for a in argv]
    if not trees:
        from refactor.kernel.fetch import bundled_tarball_trees, default_tarball_dir

        cache = Path.home() / ".cache" / "kvm-refactor" / "tarball-trees"
        trees = [p for _, p in sorted(bundled_tarball_trees(default_tarball_dir(), cache).items())]
    print(f"{'tree':<40} {'plain regions/bytes':>22} {'with conditionals':>22}")
    for tree in trees:
        m = measure(tree)
        print(f"{str(tree)[-40:]:<40} {m['plain'][0]:>10}/{m['plain'][1]:<11} "
              f"{m['conditionals'][0]:>10}/{m['conditionals'][1]:<11}")


if __name__ == "__main__":
    main(sys.argv[1:])

"""Benchmark `kvm-refactor scan` on a real tree; prints figures, asserts nothing.

Cold: a new process with an empty index cache.  Warm: a new process with the
cache filled by the cold run.  Peak memory is the process's max RSS.  When
Coccinelle's spatch is installed, the same tree is run through a one-rule
semantic patch (the walk_mmu rename) and the ratio is printed.

    python bench/scan_bench.py [--version 7.2] [--runs 3]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from refactor.index.indexer import scan_tree
from refactor.index.report import scan_json
index = scan_tree(sys.argv[1])
out = scan_json(index)
t1 = time.perf_counter()
print(json.dumps({"seconds": t1 - t0, "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "references": len(index.references)}))
"""

SMPL = """@@
@@
- vcpu->arch.walk_mmu
+ &vcpu->arch.gva_walk
"""


def run_child(tree: Path, cache: Path) -> dict:
    env = dict(os.environ, KVM_REFACTOR_CACHE=str(cache))
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD, str(tree)], env=env, cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    data = json.loads(out)
    data["wall"] = time.perf_counter() - start  # includes interpreter start-up
    return data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--version", default="7.2")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-spatch", action="store_true")
    args = ap.parse_args()

    from refactor.kernel.fetch import bundled_tarball_trees, default_tarball_dir

    cache_root = Path.home() / ".cache" / "kvm-refactor" / "tarball-trees"
    tree = bundled_tarball_trees(default_tarball_dir(), cache_root)[args.version]
    cold, warm = [], []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            cold.append(run_child(tree, Path(tmp)))
            warm.append(run_child(tree, Path(tmp)))
    med = lambda rows, k: statistics.median(r[k] for r in rows)  # noqa: E731
    print(f"tree: linux {args.version} ({cold[0]['references']} references), {args.runs} runs, median")
    print(f"scan cold: {med(cold, 'seconds'):.3f} s in-process, {med(cold, 'wall'):.3f} s wall "
          f"(with interpreter start), peak RSS {med(cold, 'maxrss_mb'):.0f} MB")
    print(f"scan warm: {med(warm, 'seconds'):.3f} s in-process, {med(warm, 'wall'):.3f} s wall, "
          f"peak RSS {med(warm, 'maxrss_mb'):.0f} MB")

    spatch = shutil.which("spatch")
    if args.no_spatch or not spatch:
        print("spatch: not installed (apt-get install coccinelle) - no ratio")
        return
    with tempfile.TemporaryDirectory() as tmp:
        rule = Path(tmp) / "walk_mmu.cocci"
        rule.write_text(SMPL)
        start = time.perf_counter()
        proc = subprocess.run([spatch, "--sp-file", str(rule), "--dir", str(tree / "arch/x86/kvm"),
                               "--include-headers", "-I", str(tree / "arch/x86/include"),
                               "--very-quiet"], capture_output=True, text=True)
        secs = time.perf_counter() - start
    hunks = proc.stdout.count("\n@@ ")
    print(f"spatch one-rule patch: {secs:.2f} s wall (exit {proc.returncode}, {hunks} hunks)")
    print(f"ratio spatch / scan cold wall: {secs / med(cold, 'wall'):.1f}x; "
          f"spatch / scan warm wall: {secs / med(warm, 'wall'):.1f}x")


if __name__ == "__main__":
    main()

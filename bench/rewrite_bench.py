"""Benchmark `rewrite` (cold and warm) and `series` on a real tree; prints figures.

Cold: a new process with an empty cache.  Warm: the same with the cache the
cold run filled.  The peer is Coccinelle running bench/cocci/rename7.cocci (a
7-rule plain renaming) on the same tree, when spatch is installed.

    python bench/rewrite_bench.py [--version 7.2] [--runs 3] [--series]
"""
from __future__ import annotations

import argparse
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


def timed(cmd, env=None, cwd=REPO) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    return time.perf_counter() - start, proc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--version", default="7.2")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--series", action="store_true", help="also time series generation (no build)")
    args = ap.parse_args()

    from refactor.kernel.fetch import bundled_tarball_trees, default_tarball_dir

    tree = bundled_tarball_trees(default_tarball_dir(),
                                 Path.home() / ".cache" / "kvm-refactor" / "tarball-trees")[args.version]
    cmd = [sys.executable, "-m", "refactor", "rewrite", str(tree)]
    cold, warm = [], []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            env = dict(os.environ, KVM_REFACTOR_CACHE=tmp)
            secs, proc = timed(cmd, env)
            assert proc.returncode == 0, proc.stderr
            cold.append(secs)
            warm.append(timed(cmd, env)[0])
    lines = proc.stdout.count("\n")
    print(f"rewrite of linux {args.version}: {lines} diff lines, {args.runs} runs, median wall time")
    print(f"  cold: {statistics.median(cold):.2f} s   warm: {statistics.median(warm):.2f} s")

    spatch = shutil.which("spatch")
    if spatch:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp) / "tree"
            shutil.copytree(tree, work)
            secs, proc = timed([spatch, "--sp-file", str(REPO / "bench/cocci/rename7.cocci"), "--dir",
                                str(work / "arch/x86/kvm"), "--include-headers", "-I",
                                str(work / "arch/x86/include"), "--very-quiet"])
        print(f"  spatch, 7-rule rename: {secs:.2f} s ({proc.stdout.count(chr(10))} diff lines)")
        print(f"  ratio spatch / rewrite: cold {secs / statistics.median(cold):.1f}x, "
              f"warm {secs / statistics.median(warm):.1f}x")
    else:
        print("  spatch not installed (apt-get install coccinelle): no ratio")

    if args.series:
        with tempfile.TemporaryDirectory() as tmp:
            repo = Path(tmp) / "linux"
            shutil.copytree(tree, repo)
            ident = ["-c", "user.name=Bench", "-c", "user.email=bench@example.com"]
            for step in (["init", "-q"], ["add", "-A", "-f"], ["commit", "-qm", "base"]):
                subprocess.run(["git", *ident, *step], cwd=repo, check=True)
            subprocess.run(["git", "config", "user.name", "Bench"], cwd=repo, check=True)
            subprocess.run(["git", "config", "user.email", "bench@example.com"], cwd=repo, check=True)
            env = dict(os.environ, KVM_REFACTOR_CACHE=str(Path(tmp) / "cache"))
            secs, proc = timed([sys.executable, "-m", "refactor", "series", str(repo), "--branch", "b",
                                "--outdir", str(Path(tmp) / "out")], env)
            assert proc.returncode == 0, proc.stderr
            print(f"series ({proc.stdout.split(':')[1].split()[0]} commits, format-patch, no build): {secs:.2f} s")


if __name__ == "__main__":
    main()

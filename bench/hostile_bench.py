"""Bounded work on hostile input: time and peak memory of each command on oversized input.

Prints figures, asserts nothing.  Each case runs `kvm-refactor` in a new
process (GNU time's max RSS is not needed: the child reports its own).

- scan and rewrite of the mini tree plus a 50 MB .c file (refused at the
  4 MiB limit before reading it), and plus 20,000 / 200,000 nested
  parentheses (refused at the nesting limit);
- lint of patches of 1, 2 and 4 MB whose every added line is a finding
  (the worst case; split over files, each under 4 MiB of new code) and of
  one over the 32 MiB limit: seconds and MB per MB, to show it is linear;
- the nesting check itself over a real tree (MB/s);
- a journalled `rewrite --in-place` of the mini tree against a plain run.

    python bench/hostile_bench.py [--tree PATH_TO_A_REAL_TREE]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MINI = REPO / "fixtures" / "mini-kvm"

CHILD = r"""
import json, resource, sys, time
from click.testing import CliRunner
from refactor.cli.app import main
t0 = time.perf_counter()
res = CliRunner().invoke(main, sys.argv[1:])
print(json.dumps({"seconds": time.perf_counter() - t0, "code": res.exit_code,
                  "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "stderr": res.stderr.strip().splitlines()[-1:] }))
"""


def run(*args: str, cache: Path) -> dict:
    env = dict(os.environ, KVM_REFACTOR_CACHE=str(cache), PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, env=env,
                          timeout=1800)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def show(label: str, r: dict) -> None:
    if "error" in r:
        print(f"{label:<44} crashed: {r['error']}")
        return
    msg = (r["stderr"] or [""])[0][:90]
    print(f"{label:<44} exit {r['code']}  {r['seconds']:7.2f} s  {r['maxrss_mb']:7.0f} MB  {msg}")


def mini_with(tmp: Path, name: str, extra: bytes | None = None, size: int | None = None) -> Path:
    tree = tmp / name
    shutil.copytree(MINI, tree)
    path = tree / "arch/x86/kvm/extra.c"
    if extra is not None:
        path.write_bytes(extra)
    if size is not None:
        with open(path, "wb") as fh:
            chunk = b"int f(struct kvm_vcpu *vcpu) { return !!vcpu->arch.walk_mmu; }\n" * 16384
            while fh.tell() < size:
                fh.write(chunk)
    return tree


def patch_of(path: Path, megabytes: int) -> None:
    """A diff adding `megabytes` of code, split over files under the 4 MiB per-file limit."""
    line = "+\tx = vcpu->arch.walk_mmu;\n"
    per_file = (3 << 20) // len(line)
    total = (megabytes << 20) // len(line)
    with open(path, "w") as fh:
        k = 0
        while total > 0:
            n = min(per_file, total)
            fh.write(f"--- a/f{k}.c\n+++ b/f{k}.c\n@@ -0,0 +1,{n} @@\n")
            fh.write(line * n)
            total -= n
            k += 1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tree", help="a real kernel tree for the nesting-check throughput")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="hostile-bench-") as tmp_s:
        tmp = Path(tmp_s)
        cache = tmp / "cache"
        show("scan, mini tree (reference)", run("scan", "--no-cache", str(MINI), cache=cache))
        big = mini_with(tmp, "big", size=50 << 20)
        show("scan, + a 50 MB .c file", run("scan", "--no-cache", str(big), cache=cache))
        show("rewrite, + a 50 MB .c file", run("rewrite", str(big), cache=cache))
        for n in (20_000, 200_000):
            deep = mini_with(tmp, f"deep{n}", extra=b"int f(int x) { return " + b"(" * n + b"x" + b")" * n + b"; }\n")
            show(f"scan, + {n} nested parentheses", run("scan", "--no-cache", str(deep), cache=cache))
            show(f"rewrite, + {n} nested parentheses", run("rewrite", str(deep), cache=cache))
        for mb in (1, 2, 4):
            p = tmp / f"p{mb}.patch"
            patch_of(p, mb)
            r = run("lint", str(p), cache=cache)
            show(f"lint, a {mb} MB patch", r)
            if "seconds" in r:
                print(f"{'':<44} {r['seconds'] / mb:.2f} s/MB, {r['maxrss_mb'] / mb:.0f} MB RSS/MB")
        (tmp / "p33.patch").write_bytes(b"")
        os.truncate(tmp / "p33.patch", 33 << 20)
        show("lint, a 33 MB patch (over the limit)", run("lint", str(tmp / "p33.patch"), cache=cache))

        if args.tree:
            sys.path.insert(0, str(REPO))
            from refactor.frontend.source import discover, nesting_depth

            files = discover(Path(args.tree))
            size = sum(len(f.data) for f in files)
            t0 = time.perf_counter()
            for f in files:
                nesting_depth(f.data)
            dt = time.perf_counter() - t0
            print(f"{'nesting check, ' + str(len(files)) + ' files':<44} {size / 1e6:.1f} MB in {dt:.3f} s "
                  f"({size / 1e6 / dt:.0f} MB/s)")

        plain, journal = tmp / "plain", tmp / "journal"
        shutil.copytree(MINI, plain)
        shutil.copytree(MINI, journal)
        show("rewrite (diff), mini tree", run("rewrite", str(plain), cache=cache))
        show("rewrite --in-place, mini tree (journalled)", run("rewrite", "--in-place", str(journal), cache=cache))


if __name__ == "__main__":
    main()

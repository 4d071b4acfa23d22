"""What ccache saves on the series' per-step Kbuild (tests/test_series.py).

Each step of the series changes a header every KVM object includes, so each
step recompiles arch/x86/kvm/, and a rerun of the test compiles the same step
states again.  This takes the compile commands Kbuild recorded in a built
output directory (its `.NAME.o.cmd` files) and times each one three ways: gcc
alone (what a step costs without ccache), through ccache with an empty cache
(the first run fills it), and through ccache again (what a rerun costs).
The objects go to a scratch directory; the output directory is only read.

    python bench/series_build_bench.py OUT_DIR [--objects x86.o,mmu/mmu.o,...]

OUT_DIR: a Kbuild output directory of a series build, e.g.
~/.cache/kvm-refactor/build/series-KEY-out.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from refactor.kernel.build import ccache_links  # noqa: E402


def compile_command(out: Path, obj: str) -> list[str]:
    """The gcc command Kbuild recorded for arch/x86/kvm/OBJ (objtool's part left out)."""
    rel = Path("arch/x86/kvm") / obj
    cmd_file = out / rel.parent / f".{rel.name}.cmd"
    m = re.search(r"^(?:saved)?cmd_\S+ := (.*)$", cmd_file.read_text(), re.M)
    if m is None:
        raise SystemExit(f"{cmd_file}: no recorded command")
    return shlex.split(m.group(1).split(" ; ")[0])


def timed(argv: list[str], out: Path, scratch: Path, env: dict[str, str]) -> float:
    # Output and dependency file in scratch: the output directory is only read.
    argv = [re.sub(r"^-Wp,-MMD,.*$", f"-Wp,-MMD,{scratch}/dep.d", a) for a in argv]
    i = argv.index("-o")
    argv[i + 1] = str(scratch / "obj.o")
    start = time.monotonic()
    proc = subprocess.run(argv, cwd=out, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:3])}... failed: {proc.stderr.strip()[-300:]}")
    return time.monotonic() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--objects", default="x86.o,mmu/mmu.o,emulate.o,vmx/vmx.o")
    args = ap.parse_args()
    links = ccache_links()
    if links is None:
        raise SystemExit("ccache is not installed (apt-get install ccache)")
    scratch = Path(tempfile.mkdtemp(prefix="series-build-bench-"))
    plain_env = dict(os.environ, LC_ALL="C")
    # A private, empty cache: the first ccache compile is a miss, the second a hit.
    cached_env = dict(plain_env, PATH=links + os.pathsep + plain_env.get("PATH", ""),
                      CCACHE_DIR=str(scratch / "ccache"))
    rows = []
    try:
        for obj in args.objects.split(","):
            argv = compile_command(args.out, obj)
            rows.append((obj, timed(argv, args.out, scratch, plain_env),
                         timed(argv, args.out, scratch, cached_env), timed(argv, args.out, scratch, cached_env)))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"{'object':<16} {'gcc':>8} {'ccache cold':>12} {'ccache warm':>12}")
    for obj, plain, cold, warm in rows:
        print(f"{obj:<16} {plain:8.2f} {cold:12.2f} {warm:12.2f}")
    total = [sum(r[i] for r in rows) for i in (1, 2, 3)]
    print(f"{'all':<16} {total[0]:8.2f} {total[1]:12.2f} {total[2]:12.2f}   (seconds; load average "
          f"{os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

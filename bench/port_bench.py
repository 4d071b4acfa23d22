"""Benchmark `port`: a 20-patch mbox written on 7.3, onto 7.2, 6.1 (and 5.10 when present).

The patches are made from 7.3's own code: each touches one function that the
refactor changed, at a line that names the new layout (the line is repeated,
as a small fix would add a check next to it), so every one needs translation.
Printed per target: time, patches ported, hunks by status; and the peer: how
many of the same patches plain `git apply --check` takes on that target.

    python bench/port_bench.py [--trees DIR] [--out DIR] [--conflicts]
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from refactor.kernel.fetch import bundled_tarball_trees, default_tarball_dir  # noqa: E402
from refactor.port.diff import file_diff  # noqa: E402
from refactor.port.engine import port_patches  # noqa: E402
from refactor.port.mail import read_mails  # noqa: E402
from refactor.rules import load_rules  # noqa: E402

LAYOUT = re.compile(r"gva_walk|ngpa_walk|->w->|\bw->|->fmt\b|kvm_page_format")
FILES = ("arch/x86/kvm/mmu/mmu.c", "arch/x86/kvm/x86.c", "arch/x86/kvm/mmu.h", "arch/x86/kvm/regs.c",
         "arch/x86/kvm/vmx/nested.c", "arch/x86/kvm/svm/nested.c", "arch/x86/kvm/hyperv.c",
         "arch/x86/kvm/mmu/paging_tmpl.h", "arch/x86/kvm/mmu/spte.c", "arch/x86/kvm/mmu/tdp_mmu.c",
         "arch/x86/kvm/emulate.c", "arch/x86/kvm/svm/svm.c", "arch/x86/kvm/vmx/vmx.c")


def make_mbox(tree: Path, count: int = 20) -> str:
    mails, seen_funcs = [], set()
    for rel in FILES:
        lines = (tree / rel).read_text().split("\n")
        func = None
        for i, line in enumerate(lines):
            if re.match(r"^[a-z].*\(", line):
                func = line
            if len(mails) == count:
                break
            if (func and func not in seen_funcs and line.startswith("\t") and LAYOUT.search(line)
                    and line.rstrip().endswith(";") and "struct" not in line and "=" in line):
                seen_funcs.add(func)
                text = "\n".join(lines)
                new = "\n".join(lines[:i + 1] + [line] + lines[i + 1:])
                k = len(mails) + 1
                mails.append(f"From {k:040x} Mon Sep 17 00:00:00 2001\nFrom: Bench <bench@example.org>\n"
                             f"Date: Mon, 30 Nov 2026 10:00:00 +0000\n"
                             f"Subject: [PATCH {k:02d}/{count}] KVM: x86/mmu: Probe {k}\n\nProbe.\n\n"
                             f"Signed-off-by: Bench <bench@example.org>\n---\n{file_diff(rel, text, new)}-- \n"
                             "2.47.0\n\n")
    return "".join(mails)


def git_apply_peer(mbox: str, tree: Path) -> int:
    ok = 0
    for chunk in re.split(r"(?m)^(?=From [0-9a-f]{40} )", mbox):
        if "diff --git" not in chunk:
            continue
        proc = subprocess.run(["git", "apply", "--check", "-"], cwd=tree, input=chunk.encode(),
                              capture_output=True)
        ok += proc.returncode == 0
    return ok


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trees", default=str(default_tarball_dir()))
    ap.add_argument("--out", default=None, help="keep the mbox and ported patches here")
    ap.add_argument("--conflicts", action="store_true", help="print each conflict's file:line and reason")
    args = ap.parse_args()
    cache = Path(os.environ.get("KVM_REFACTOR_TREE_CACHE", Path.home() / ".cache" / "kvm-refactor" /
                                "tarball-trees"))
    trees = bundled_tarball_trees(Path(args.trees), cache)
    if "5.10" not in trees:
        # A 5.10 tree fetched with `kvm-refactor fetch-tree 5.10 [--full]`, when there is one.
        fetched = Path.home() / ".cache" / "kvm-refactor" / "trees"
        for name in ("linux-source-5.10", "linux-source-5.10-full"):
            if (fetched / name / "arch" / "x86" / "kvm").is_dir():
                trees["5.10"] = fetched / name
                break
    mbox = make_mbox(trees["7.3"])
    mails = read_mails(mbox, "bench.mbox")
    targets = [trees[v] for v in ("7.2", "6.1", "5.10") if v in trees]
    print(f"mbox: {len(mails)} patches made from 7.3; targets: "
          + ", ".join(v for v in ("7.2", "6.1", "5.10") if v in trees)
          + ("" if "5.10" in trees else " (no 5.10 tree: `kvm-refactor fetch-tree 5.10` adds it)"))
    rules = load_rules()
    start = time.perf_counter()
    report = port_patches(mails, targets, rules=rules, porter=("Bench", "bench@example.org"))
    total = time.perf_counter() - start
    print(f"port, in process: {total:.2f} s for {len(mails)} patches x {len(targets)} targets "
          f"({total / max(len(mails) * len(targets), 1) * 1000:.0f} ms per patch and target)")
    for tr in report.targets:
        hunks = Counter(h.status for p in tr.patches for h in p.hunks)
        ported = sum(p.result == "ported" for p in tr.patches)
        peer = git_apply_peer(mbox, tr.target.root)
        print(f"  {tr.target.version:10s} ported {ported:2d}/{len(tr.patches)}  hunks: "
              + ", ".join(f"{n} {s}" for s, n in sorted(hunks.items()))
              + f"  | git apply --check takes {peer}/{len(tr.patches)}")
        for p in tr.patches if args.conflicts else ():
            for h in p.hunks:
                if h.status == "conflict":
                    where = f"{h.target_file}:{h.target_start + 1}" if h.target_start is not None else h.file
                    print(f"    {p.mail.subject}: {where}: {h.reason}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.out or tmp) / "bench.mbox"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(mbox)
        cmd = [sys.executable, "-m", "refactor", "port", str(path), "--format", "text"]
        for t in targets:
            cmd += ["--onto", str(t)]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        wall = time.perf_counter() - start
        print(f"port, command line (process start included): {wall:.2f} s wall, exit {proc.returncode}")


if __name__ == "__main__":
    main()

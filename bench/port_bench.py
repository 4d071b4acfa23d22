"""Benchmark `port`: a 20-patch mbox written on 7.3, onto 7.2, 6.1 (and 5.10 when present).

The patches are made from 7.3's own code: each touches one function that the
refactor changed, at a line that names the new layout (the line is repeated,
as a small fix would add a check next to it), so every one needs translation.
Printed per target: time, patches ported, hunks by status; and the peer: how
many of the same patches plain `git apply --check` takes on that target.

    python bench/port_bench.py [--trees DIR] [--out DIR] [--conflicts]
    python bench/port_bench.py --forward [--conflicts] [--wrong]

`--forward` measures the other direction (issue #16 item 5): one probe per
function of 7.2, 6.1 and 5.10 that the index finds naming an old-layout
member or a moved field, ported onto 7.3 (and 7.2), each ported result
compared with what `rewrite` makes of the source tree with the probe: the
change the port makes to the function must be the change the rewrite makes.
"""
from __future__ import annotations

import argparse
import difflib
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


# ---- forward mode: old-layout probes onto the new layout, checked against `rewrite` ------------

FORWARD = {"7.2": ("7.3",), "6.1": ("7.3", "7.2"), "5.10": ("7.3", "7.2")}
_STATEMENT_END = (";", "{", "}", ")", ":", "*/")


def _probe_line(lines: list[str], i: int, returns: bool = False) -> bool:
    """Whether line i is a whole statement that a fix could repeat next to itself (a `return`
    only with `returns`: a function whose only such line is its return)."""
    line = lines[i]
    if not (line.startswith("\t") and line.rstrip().endswith(";") and line.count("(") == line.count(")")):
        return False
    if re.match(r"\s*(?:struct\b|goto\b|break\b|case\b|#)", line) or not returns and re.match(r"\s*return\b", line):
        return False
    prev = next((x.rstrip() for x in reversed(lines[:i]) if x.strip()), "")
    # A line after `a ? b :` continues that statement; a label's colon ends one.
    return prev.endswith(_STATEMENT_END) and not (prev.endswith(":") and "?" in prev)


def forward_probes(tree: Path, rules) -> list[tuple[str, str, int]]:
    """(file, function, 0-based line) per function of `tree` that names an old-layout member
    (rules' vcpu members: walk_mmu, nested_mmu, root_mmu, guest_mmu, mmu) or a field the layout
    moved (layout.toml mmu_fields), from the index: the first of its lines a fix could repeat."""
    from refactor.index.indexer import scan_tree

    index = scan_tree(tree, rules)
    moved = set(rules.mmu_fields)
    cands: dict[tuple[str, str], list[int]] = {}
    for ref in index.code_references():
        if ref.function and ref.region == "code" and (ref.kind == "vcpu_member" or
                                                      (ref.kind == "mmu_field" and ref.symbol in moved)):
            cands.setdefault((ref.file, ref.function), []).append(ref.line - 1)
    out, texts = [], {}
    for (rel, func), at in sorted(cands.items()):
        lines = texts.setdefault(rel, (tree / rel).read_text().split("\n"))
        i = next((i for returns in (False, True) for i in sorted(set(at)) if _probe_line(lines, i, returns)),
                 None)
        if i is not None:
            out.append((rel, func, i))
    return out


def _mail(k: int, count: int, diff: str, what: str) -> str:
    return (f"From {k:040x} Mon Sep 17 00:00:00 2001\nFrom: Bench <bench@example.org>\n"
            f"Date: Mon, 30 Nov 2026 10:00:00 +0000\n"
            f"Subject: [PATCH {k:02d}/{count}] KVM: x86/mmu: Probe {k} ({what})\n\nProbe.\n\n"
            f"Signed-off-by: Bench <bench@example.org>\n---\n{diff}-- \n2.47.0\n\n")


def _kvm_copy(tree: Path, dest: Path, probes: list[tuple[str, str, int]]) -> None:
    """The tree's KVM sources (what the rewrite reads) in `dest`, every probe's line repeated."""
    from refactor.frontend.source import discover

    at: dict[str, set[int]] = {}
    for rel, _f, i in probes:
        at.setdefault(rel, set()).add(i)
    for sf in discover(tree):
        path = dest / sf.rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if sf.rel in at:
            lines = sf.data.decode().split("\n")
            lines = [y for i, x in enumerate(lines) for y in ([x, x] if i in at[sf.rel] else [x])]
            path.write_text("\n".join(lines))
        else:
            path.write_bytes(sf.data)


def _function(text: str | None, rel: str, func: str) -> list[str] | None:
    from refactor.port.target import Target

    if text is None:
        return None
    spans = Target(root=Path("."), version="", layout="", names=None,
                   files={rel: text.encode()}).territories(rel, func)
    if len(spans) != 1:
        return None
    a, b = spans[0]
    lines = text.split("\n")[a:b + 1]
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def _delta(before: list[str], after: list[str]) -> list[tuple[str, str]]:
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, before, after, autojunk=False).get_opcodes():
        if op != "equal":
            out += [("-", x) for x in before[i1:i2]] + [("+", x) for x in after[j1:j2]]
    return out


def _classify(exp, have, target_fn: list[str]) -> str:
    """equal: the port changes the function as the rewrite does; target: it adds the target's own
    line where the target differs from the rewrite of the source there (a non-layout change of
    the target, e.g. 7.2's `vcpu->arch.pdptrs`); restyle: the rewrite of the patched function
    also rewrote lines the probe did not touch (a local for a repeated walker); else wrong."""
    if exp == have:
        return "equal"
    added = [x for t, x in have if t == "+"]
    if (all(t == "+" for t, _x in have) and all(x in target_fn for x in added)
            and not any(x in target_fn for t, x in exp if t == "+")):
        return "target"
    if (any(t == "-" for t, _x in exp) and all(t == "+" for t, _x in have)
            and all(x in target_fn for x in added)):
        return "restyle"
    return "wrong"


def forward(trees: dict[str, Path], rules, conflicts: bool, wrong: bool, sources=None) -> None:
    from refactor.plan.rewrite import plan_rewrite
    from refactor.port.engine import port_one
    from refactor.port.target import load_target

    targets = {v: load_target(trees[v], rules) for v in ("7.3", "7.2") if v in trees}
    print("forward: old-layout probes (one per function naming an old-layout member or a moved field,"
          " from the index), each ported alone; checked against `rewrite` of the patched source")
    for src in sources or FORWARD:
        if src not in trees:
            print(f"  {src}: no tree")
            continue
        tree = trees[src]
        start = time.perf_counter()
        probes = forward_probes(tree, rules)
        with tempfile.TemporaryDirectory() as tmp:
            plain, patched = Path(tmp) / "plain", Path(tmp) / "patched"
            _kvm_copy(tree, plain, [])
            _kvm_copy(tree, patched, probes)
            plans = [plan_rewrite(plain, "upstream", rules), plan_rewrite(patched, "upstream", rules)]
            # What the source says, as it is and patched, on each layout (the rewrite, or as is).
            oracle = {"old": [{}, {}], "new": [{}, {}]}
            for k, root in enumerate((plain, patched)):
                for rel in {r for r, _f, _i in probes}:
                    text = (root / rel).read_text()
                    oracle["old"][k][rel] = text
                    oracle["new"][k][rel] = plans[k].results[rel].decode() if rel in plans[k].results else text
        oracle_s = time.perf_counter() - start
        for dst in FORWARD[src]:
            if dst not in targets:
                continue
            target = targets[dst]
            tally: Counter = Counter()
            notes = []
            start = time.perf_counter()
            for k, (rel, func, i) in enumerate(probes, 1):
                text = (tree / rel).read_text()
                lines = text.split("\n")
                mail = read_mails(_mail(k, len(probes), file_diff(rel, text, "\n".join(
                    lines[:i + 1] + [lines[i]] + lines[i + 1:])), func), "forward.mbox")[0]
                res = port_one(mail, target, rules)
                if res.result == "conflict":
                    tally["conflict"] += 1
                    for h in res.hunks if conflicts else ():
                        if h.status == "conflict":
                            notes.append(f"    CONFLICT {rel}:{i + 1} {func}: {lines[i].strip()}\n"
                                         f"      {h.reason}")
                    continue
                tally["ported"] += 1
                hunk = res.hunks[0]
                want = [_function(side[rel], rel, func) for side in oracle[target.layout]]
                got_rel = hunk.target_file or rel
                got = [_function(target.text(got_rel), got_rel, func),
                       _function(res.files.get(got_rel), got_rel, func)]
                if None in want or None in got:
                    tally["unchecked"] += 1
                    notes.append(f"    UNCHECKED {rel}:{i + 1} {func}: function not found once "
                                 f"({'rewrite' if None in want else 'target'})")
                    continue
                exp, have = _delta(*want), _delta(*got)
                verdict = _classify(exp, have, got[0])
                tally[verdict] += 1
                if verdict == "equal":
                    continue
                if verdict == "wrong" and [(t, x.strip()) for t, x in exp] == [(t, x.strip()) for t, x in have]:
                    tally["wrong (whitespace only)"] += 1
                if wrong:
                    notes.append(f"    {verdict.upper()} {rel}:{i + 1} {func}: {lines[i].strip()}\n"
                                 + "".join(f"      rewrite {t}{x}\n" for t, x in exp)
                                 + "".join(f"      port    {t}{x}\n" for t, x in have))
            took = time.perf_counter() - start
            print(f"  {src} -> {target.version:8s} probes {len(probes):3d}  ported {tally['ported']:3d}  "
                  f"equal to rewrite {tally['equal']:3d}  wrong {tally['wrong']:2d}"
                  f"{' (%d whitespace only)' % tally['wrong (whitespace only)'] if tally['wrong'] else ''}"
                  f"  conflict {tally['conflict']:3d}  (ported, not equal: the target's own line "
                  f"{tally['target']}, rewrite restyled {tally['restyle']})"
                  + (f"  unchecked {tally['unchecked']}" if tally["unchecked"] else "")
                  + f"  ({took:.1f} s port, {oracle_s:.1f} s rewrite)")
            for n in notes:
                print(n, end="" if n.endswith("\n") else "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trees", default=str(default_tarball_dir()))
    ap.add_argument("--out", default=None, help="keep the mbox and ported patches here")
    ap.add_argument("--conflicts", action="store_true", help="print each conflict's file:line and reason")
    ap.add_argument("--forward", action="store_true",
                    help="forward ports: probes made on 7.2, 6.1, 5.10 onto 7.3 (and 7.2), checked against "
                         "`rewrite` of the patched source")
    ap.add_argument("--sources", nargs="*", help="with --forward: only these source trees (7.2 6.1 5.10)")
    ap.add_argument("--wrong", action="store_true", help="with --forward: print each wrong port")
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
    if args.forward:
        forward(trees, load_rules(), args.conflicts, args.wrong, args.sources)
        return
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

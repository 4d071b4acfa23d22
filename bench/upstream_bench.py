"""How close the rewrite of 7.2 comes to upstream's own 7.3, function by function.

    python bench/upstream_bench.py [--old TREE] [--new TREE] [--units] [--misses N] [--json]

Both trees default to the bundled linux-kvm-7.2/7.3 subsets ($KVM_REFACTOR_TREES,
default ../shared/kernel).  The rewrite of OLD (upstream names) and NEW are cut
into units: function definitions, struct/union/enum definitions and #defines,
matched by name (in another file if upstream moved them).  For every unit:

- changed: upstream changed it (7.2 -> 7.3), we changed it (7.2 -> rewrite);
- identical: our version equals 7.3's after whitespace normalisation;
- lines shared: lines of our version found in 7.3's (difflib matching blocks).

Changed lines are compared as hunks of the line diff against 7.2 (lines
normalised: runs of whitespace -> one space, blank lines ignored): a removed
7.2 line matches if both sides remove it, an added line if both add the same
text in that unit.  recall = upstream's layout lines we reproduce / upstream's
layout lines; precision = our changed lines that upstream made too / our
changed lines.

7.3 also carries other series merged in the same release.  Their hunks are
left out on both sides (ours only where they overlap such a hunk), and listed
with --other: a hunk of upstream's diff belongs to the layout series when one
of its lines names something the layout rules move or rename (the words come
from rules/: old vcpu-arch members, struct kvm_mmu fields and their new
paths, the types, the walker names of every preset, functions named by
restructure.toml and mappings.toml [[calls]]), or one of SERIES_WORDS below.
Everything else is another series.  What that leaves out on 7.2 -> 7.3, by
subject (see --other for every hunk):

- x86 MSR handling moved out of x86.c into msrs.c/msrs.h (the functions move,
  x86.c and kvm_host.h lose them): no layout name in them;
- Hyper-V TLB-flush FIFO rework (hv_tlb_flush_enqueue() takes a bool, the
  fifo local goes, to_hv_vcpu_safe()): same functions as the layout series'
  "hyperv: remove unnecessary mmu_is_nested() check", other hunks;
- VMX preemption-timer set-up split into vmx_setup_preemption_timer(),
  static_cpu_has() -> cpu_feature_enabled(), and other vmx/svm/sev/tdx
  hardening and feature work;
- guest_memfd split (guest_memfd.h) and kvm_main.c/pfncache.c MMU-notifier
  changes in virt/kvm;
- kvm_calc_cpu_role(): a KVM_BUG_ON() for EFER.LMA without CR4.PAE (a fix,
  no layout name);
- lapic/ioapic/irq/pmu/xen/cpuid/emulate changes of the same merge window.
"""
from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# Functions the layout series itself introduced, removed or re-plumbed that no
# layout rule names (yet): facts about upstream's series (DOMAIN.md, "use
# kvm_page_format to test SPTEs", "hyperv: remove unnecessary mmu_is_nested()
# check"), used only to classify upstream's hunks, never to rewrite.
SERIES_WORDS = (
    "mmu_is_nested", "spte_permission_fault", "is_access_allowed", "is_executable_pte",
    "update_spte_permission_bitmask", "__update_permission_bitmask", "init_kvm_page_walk",
    "shadow_walk_init_using_root", "__kvm_inject_emulated_page_fault", "kvm_translate_gpa",
    "translate_nested_gpa",
)

_HOLDERS = {"translation_unit", "preproc_if", "preproc_ifdef", "preproc_else", "preproc_elif",
            "preproc_elifdef", "linkage_specification", "ERROR"}


def norm(line: str) -> str:
    return " ".join(line.split())


def units(rel: str, src: bytes) -> dict[str, list[str]]:
    """Top-level units of a C file: name -> normalised non-blank lines."""
    from refactor.frontend.parse import parse
    from refactor.index.program import function_name

    pf = parse(rel, src, want_macros=False)
    out: dict[str, list[str]] = {}
    stack = [pf.main.tree.root_node]
    while stack:
        node = stack.pop()
        for c in node.children:
            if c.type in _HOLDERS:
                stack.append(c)
                continue
            name = None
            if c.type == "function_definition":
                name = function_name(c)
            elif c.type in ("declaration", "type_definition", "struct_specifier"):
                spec = c if c.type == "struct_specifier" else c.child_by_field_name("type")
                if spec is not None and spec.type in ("struct_specifier", "union_specifier",
                                                      "enum_specifier") \
                        and spec.child_by_field_name("body") is not None \
                        and spec.child_by_field_name("name") is not None:
                    name = spec.type.split("_")[0] + " " + spec.child_by_field_name("name").text.decode()
            elif c.type in ("preproc_function_def", "preproc_def"):
                name = "#define " + c.child_by_field_name("name").text.decode()
            if not name or name == "?":
                continue
            s = src.rfind(b"\n", 0, c.start_byte) + 1
            e = src.find(b"\n", c.end_byte)
            body = src[s:len(src) if e < 0 else e].decode("utf-8", "replace")
            key, i = name, 1
            while key in out:  # #ifdef variants keep their order
                i += 1
                key = f"{name}#{i}"
            out[key] = [n for n in map(norm, body.splitlines()) if n]
    return out


@dataclass
class Hunk:
    i1: int  # removed 7.2 lines [i1, i2) of the unit
    i2: int
    added: list[str]
    layout: bool = True


def hunks(old: list[str], new: list[str]) -> list[Hunk]:
    sm = difflib.SequenceMatcher(None, old, new, autojunk=False)
    return [Hunk(i1, i2, new[j1:j2]) for op, i1, i2, j1, j2 in sm.get_opcodes() if op != "equal"]


@dataclass
class UnitResult:
    file: str
    name: str
    up_changed: bool
    us_changed: bool
    identical: bool
    shared: int  # lines of ours found in 7.3's
    ours: int  # lines of ours
    up_lines: int = 0  # upstream's layout lines (removed + added)
    us_lines: int = 0  # our changed lines (not overlapping other series)
    matched_up: int = 0
    matched_us: int = 0
    other: list = field(default_factory=list)  # upstream hunks of other series (text)
    misses: list = field(default_factory=list)  # upstream layout lines we did not make
    extras: list = field(default_factory=list)  # our lines upstream did not make


def layout_words(rules) -> re.Pattern:
    # Fields that stay in struct kvm_mmu under their name (root, prev_roots...) are
    # not layout words: other series touch them too.
    moved = [f for f in rules.mmu_fields.values() if f.moves_to_walker or f.path != f.name]
    words = set(rules.vcpu_old) | set(rules.new_fields)
    # A new path counts when it is one member (fmt), not a path into the role
    # (5.x root_level -> cpu_role.base.level would make "level" a layout word).
    words |= {f.name for f in moved} | {f.path for f in moved if re.fullmatch(r"\w+", f.path)}
    words |= set(rules.type_names())
    words |= {p.gva for p in rules.presets.values()} | {p.ngpa for p in rules.presets.values()}
    # Functions the restructure rules name (not their other parameters: kind, type_key...).
    fn_keys = {"function", "from", "to", "dispatcher", "inner", "then_mmu", "walker_first", "merge",
               "rename", "after_call"}
    for entries in rules.restructure.values():
        for e in entries:
            for k, v in e.params.items():
                if k not in fn_keys:
                    continue
                vals = list(v.items()) if isinstance(v, dict) else (v if isinstance(v, list) else [v])
                for s in vals:
                    for x in (s if isinstance(s, tuple) else (s,)):
                        if isinstance(x, str) and re.fullmatch(r"\w+", x):
                            words.add(x)
    words |= {c.function for c in rules.calls} | {c.new for c in rules.calls}
    words |= set(SERIES_WORDS) | {"w"}
    words.discard("")
    return re.compile(r"\b(?:" + "|".join(sorted(map(re.escape, words), key=len, reverse=True)) + r")\b")


def compare_unit(file: str, name: str, old: list[str] | None, new: list[str] | None,
                 ours: list[str] | None, words: re.Pattern) -> UnitResult:
    o, n, u = old or [], new or [], ours or []
    up, us = hunks(o, n), hunks(o, u)
    for h in up:
        h.layout = any(words.search(t) for t in o[h.i1:h.i2] + h.added)
    r = UnitResult(file, name, o != n, o != u, n == u and new is not None and ours is not None,
                   sum(b.size for b in difflib.SequenceMatcher(None, u, n, autojunk=False)
                       .get_matching_blocks()), len(u))
    r.other = [h for h in up if not h.layout]
    lay = [h for h in up if h.layout]
    up_removed = {i for h in lay for i in range(h.i1, h.i2)}
    up_added: dict[str, int] = {}
    for h in lay:
        for t in h.added:
            up_added[t] = up_added.get(t, 0) + 1
    other_removed = {i for h in r.other for i in range(h.i1, h.i2)}
    r.up_lines = len(up_removed) + sum(up_added.values())
    pool = dict(up_added)
    for h in us:
        span = set(range(h.i1, h.i2))
        overlaps_other = bool(span & other_removed) if span else \
            any(x.i1 <= h.i1 <= x.i2 for x in r.other)
        if overlaps_other and not span & up_removed:
            continue  # another series rewrote these lines: no verdict on ours
        for i in range(h.i1, h.i2):
            r.us_lines += 1
            if i in up_removed:
                r.matched_us += 1
            else:
                r.extras.append("-" + o[i])
        for t in h.added:
            r.us_lines += 1
            if pool.get(t, 0) > 0:
                pool[t] -= 1
                r.matched_us += 1
            else:
                r.extras.append("+" + t)
    ours_removed = {i for h in us for i in range(h.i1, h.i2)}
    r.matched_up = len(up_removed & ours_removed) + sum(up_added.values()) - sum(pool.values())
    r.misses = ["-" + o[i] for i in sorted(up_removed - ours_removed)] + \
        [f"+{t}" for t, c in pool.items() for _ in range(c)]
    return r


def c_files(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.suffix in (".c", ".h")}


def compare_trees(old_root: Path, new_root: Path, rewritten: dict[str, bytes], rules) -> list[UnitResult]:
    words = layout_words(rules)
    old_files, new_files = c_files(old_root), c_files(new_root)
    results: list[UnitResult] = []
    new_units = {rel: units(rel, p.read_bytes()) for rel, p in new_files.items()}
    where = {}  # unit name -> files of 7.3 defining it (moved units)
    for rel, us in new_units.items():
        for k in us:
            where.setdefault(k, []).append(rel)
    old_units = {rel: units(rel, p.read_bytes()) for rel, p in old_files.items()}
    old_names = {k for us in old_units.values() for k in us}
    for rel, path in old_files.items():
        src = path.read_bytes()
        nsrc = new_files[rel].read_bytes() if rel in new_files else b""
        osrc = rewritten.get(rel, src)
        if src == nsrc and src == osrc:
            continue
        ou, nu, uu = old_units[rel], new_units.get(rel, {}), units(rel, osrc)
        for k in sorted(set(ou) | set(nu) | set(uu)):
            new = nu.get(k)
            if new is None and k in ou and where.get(k):
                new = new_units[where[k][0]][k]  # moved by upstream
            if k not in ou and k not in uu:
                continue  # new upstream unit, counted in the file it was defined in (below)
            results.append(compare_unit(rel, k, ou.get(k), new, uu.get(k), words))
        # Units upstream added to this file (its own new functions, if layout).
        for k in sorted(set(nu) - set(ou) - set(uu) - old_names):  # moved ones: counted where they were
            results.append(compare_unit(rel, k, None, nu[k], None, words))
    return results


def summary(results: list[UnitResult]) -> dict:
    up_changed = [r for r in results if r.up_changed and r.up_lines]
    us_changed = [r for r in results if r.us_changed]
    both = [r for r in results if r.us_changed and r.up_changed]
    up_lines = sum(r.up_lines for r in results)
    us_lines = sum(r.us_lines for r in results)
    return {
        "units_changed_upstream_layout": len(up_changed),
        "units_changed_by_us": len(us_changed),
        "units_changed_by_both": len(both),
        "units_identical": sum(1 for r in us_changed if r.identical),
        "units_identical_of_upstream_layout": sum(1 for r in up_changed if r.identical),
        "lines_shared": sum(r.shared for r in us_changed),
        "lines_ours": sum(r.ours for r in us_changed),
        "upstream_layout_lines": up_lines,
        "our_changed_lines": us_lines,
        "recall": sum(r.matched_up for r in results) / up_lines if up_lines else 1.0,
        "precision": sum(r.matched_us for r in results) / us_lines if us_lines else 1.0,
        "other_series_hunks": sum(len(r.other) for r in results),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", help="old-layout tree (default: bundled 7.2)")
    ap.add_argument("--new", help="upstream new-layout tree (default: bundled 7.3)")
    ap.add_argument("--units", action="store_true", help="one line per changed unit")
    ap.add_argument("--misses", type=int, default=0, metavar="N",
                    help="show up to N missed/extra lines per unit")
    ap.add_argument("--other", action="store_true", help="list the other-series hunks left out")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from refactor.rules import load_rules
    from refactor.plan.rewrite import plan_rewrite

    if not (args.old and args.new):
        from refactor.kernel.fetch import bundled_tarball_trees, default_tarball_dir

        trees = bundled_tarball_trees(default_tarball_dir(),
                                      Path.home() / ".cache" / "kvm-refactor" / "tarball-trees")
    old = Path(args.old) if args.old else trees["7.2"]
    new = Path(args.new) if args.new else trees["7.3"]
    rules = load_rules()
    plan = plan_rewrite(old, "upstream", rules)
    results = compare_trees(old, new, plan.results, rules)
    s = summary(results)
    if args.json:
        print(json.dumps(s, indent=1))
        return
    if args.units or args.misses:
        for r in results:
            if not (r.us_changed or r.up_lines):
                continue
            flag = ("U" if r.up_lines else "-") + ("R" if r.us_changed else "-") + ("=" if r.identical else " ")
            print(f"{flag} {r.file}: {r.name}  up {r.matched_up}/{r.up_lines}  us {r.matched_us}/{r.us_lines}")
            for line in (r.misses[:args.misses] if args.misses else []):
                print(f"     miss {line}")
            for line in (r.extras[:args.misses] if args.misses else []):
                print(f"     extra {line}")
    if args.other:
        for r in results:
            for h in r.other:
                print(f"other-series {r.file}: {r.name}: -{h.i2 - h.i1} +{len(h.added)}"
                      f" {(h.added or ['(removal)'])[0][:70]}")
    print(f"rewrite of {old.name} vs upstream {new.name}, function by function")
    print(f"  units changed: upstream (layout) {s['units_changed_upstream_layout']}, "
          f"ours {s['units_changed_by_us']}, both {s['units_changed_by_both']}")
    print(f"  identical after whitespace normalisation: {s['units_identical']} of ours "
          f"({s['units_identical_of_upstream_layout']} of upstream's)")
    print(f"  lines shared with 7.3 in the units we change: {s['lines_shared']} of {s['lines_ours']}")
    print(f"  recall    {s['recall']:.1%}  ({s['upstream_layout_lines']} upstream layout lines)")
    print(f"  precision {s['precision']:.1%}  ({s['our_changed_lines']} changed lines of ours)")
    print(f"  other-series hunks left out: {s['other_series_hunks']}")


if __name__ == "__main__":
    main()

"""Build the native engine for a kernel tree: its own KVM C, compiled for user space.

Each KVM unit is preprocessed with the tree's own command line (Kbuild's
`.i` target, learned once per configuration: prepare.py), compiled as an
ordinary user-space object with a glue file appended (glue_*.c, ours),
linked with the harness (harness.c, ours) and a stub file generated from
what is still undefined.  The result is a non-PIE executable driven over a
pipe (model.py).

Everything is cached by content, per unit: a unit whose source and headers
are unchanged is neither preprocessed nor compiled again (its dependency
list from the last preprocessing is hashed instead, as ccache's direct mode
does), and the pristine tree, its rewrite and every series step share the
objects of the units they have in common.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from refactor.rules import RulesError, load_rules

from .cache import prune_after_build, touch, using
from .layout import LayoutError, layout_header
from .prepare import (Hasher, Prepared, PrepareError, dep_paths, find_prepared, first_error,
                      kbuild_output, run, unit_command)
from .link import LinkError, link

HARNESS = Path(__file__).resolve().parent / "harness"
# (kernel unit, glue appended to it); the vendor units give nested VMX/SVM.
UNITS = (("arch/x86/kvm/x86.c", "glue_x86.c"),
         ("arch/x86/kvm/mmu/mmu.c", "glue_mmu.c"),
         ("arch/x86/kvm/cpuid.c", "glue_cpuid.c"),
         ("arch/x86/kvm/regs.c", "glue_regs.c"),     # 7.x: load_pdptrs() and the CR writes
         ("arch/x86/kvm/vmx/nested.c", "glue_vmx.c"),
         ("arch/x86/kvm/svm/nested.c", "glue_svm.c"))
# Functions of a unit replaced by the glue appended to it: VM-exit emulation
# switches vmcs/vmcb state the harness does not have; the glue records the
# exit as the event's result instead (delivery is reported, not performed).
# Per unit: (macro the glue is compiled with, candidate names: the first with one
# out-of-line definition in the unit is replaced; 7.x moved the body of
# nested_vmx_vmexit() to __nested_vmx_vmexit()).
REPLACED = {"arch/x86/kvm/vmx/nested.c": ("H_VMX_VMEXIT", ("__nested_vmx_vmexit",
                                                           "nested_vmx_vmexit")),
            "arch/x86/kvm/svm/nested.c": ("H_SVM_VMEXIT", ("nested_svm_vmexit",))}
# -O1: the kernel units are 80-100k lines each and most of their functions never
# run here; -O1 compiles them in about half the time of -O2 (docs/native-engine.md).
# No -w: it silences -Werror= too.  What the kernel's own build makes an error (its
# Makefile's -Werror= list; KVM builds with -Werror) and what GCC 14 makes one by default
# stays an error here: a rewrite that calls an undeclared function must not compile into a
# call of a trapping stub.  Other warnings are left on (user-space compilation of kernel
# code has a few harmless ones) but never shown: the compiler's output is read only when it
# fails.  -Wno-address-of-packed-member: the kernel's own flag (90 a unit otherwise).
ERROR_FLAGS = ["-Werror=implicit-function-declaration", "-Werror=implicit-int",
               "-Werror=return-type", "-Werror=strict-prototypes",
               "-Werror=incompatible-pointer-types", "-Werror=int-conversion",
               "-Werror=designated-init", "-Wno-address-of-packed-member"]
# The glue (ours) fills kvm_x86_ops hooks whose signatures vary between trees (7.x's
# flush_tlb_gva takes a `bool *full` the glue's version ignores; KVM's MMU passes NULL):
# a pointer type mismatch there is a warning, in the kernel's text an error.
GLUE_PRAGMAS = '#pragma GCC diagnostic warning "-Wincompatible-pointer-types"\n'
CFLAGS = ["-O1", "-fno-pie", "-mcmodel=small", "-fno-strict-aliasing", "-fno-common",
          "-std=gnu11", "-fno-stack-protector", "-mno-red-zone", *ERROR_FLAGS]
HARNESS_CFLAGS = ["-O2", "-fno-pie", "-Wall", "-Wno-unused-function"]
# Flags of the tree's own command line that change what the C means (not how it is
# placed or hardened): taken from the unit's Kbuild command.
SEMANTIC_FLAGS = re.compile(r"^(-fms-extensions|-f(?:un)?signed-char|-fno-strict-overflow|-fwrapv"
                            r"|-fno-delete-null-pointer-checks|-fshort-wchar|-fno-strict-aliasing"
                            r"|-ftrivial-auto-var-init=\S+|-std=\S+|-fno-builtin-\S+)$")
FORMAT = "3"      # bump when what a cached unit or engine holds changes


class EngineError(RuntimeError):
    """The engine cannot be built or run; the message is one line."""


@dataclass
class BuildInfo:
    key: str
    seconds: float
    cached: bool
    layout: dict = field(default_factory=dict)
    units: list[str] = field(default_factory=list)
    stubs: int = 0
    times: dict = field(default_factory=dict)     # seconds per phase
    compiled: list[str] = field(default_factory=list)   # units compiled (not cached)


def cache_root(cache_dir: Path | None = None) -> Path:
    if cache_dir:
        return Path(cache_dir)
    base = os.environ.get("KVM_REFACTOR_CACHE")
    root = Path(base) if base else Path(os.environ.get("XDG_CACHE_HOME",
                                                       Path.home() / ".cache")) / "kvm-refactor"
    return root / "native"


def check_tree(tree: Path) -> None:
    if not (tree / "arch/x86/kvm/mmu/mmu.c").is_file():
        raise EngineError(f"{tree}: not a kernel tree with arch/x86/kvm/mmu/mmu.c")
    if not (tree / "Makefile").is_file() or not (tree / "scripts").is_dir():
        raise EngineError(f"{tree}: not a full kernel tree (no Makefile or scripts/); get one "
                          f"with `kvm-refactor fetch-tree VERSION --full`")
    if (tree / ".config").exists():
        raise EngineError(f"{tree}: the tree is configured in place (.config); the engine "
                          "builds in its own output directory and needs a clean tree")


def semantic_flags(argv: list[str]) -> list[str]:
    out: list[str] = []
    for w in argv:
        if SEMANTIC_FLAGS.match(w) and w not in out:
            out.append(w)
    return out


def ops_header(tree: Path, x86_text: str) -> str:
    """ops.h: a trap for every mandatory kvm_x86_ops hook (KVM_X86_OP in the tree's
    kvm-x86-ops.h) that the tree's struct has; h_x86_ops' NULL ones get it before
    kvm_ops_update(), so no set-up WARN fires and a call names the hook."""
    try:
        listed = (tree / "arch/x86/include/asm/kvm-x86-ops.h").read_text(errors="replace")
    except OSError:
        return "#define H_FILL_OPS(ops) do { } while (0)\n"
    mandatory = re.findall(r"^KVM_X86_OP\((\w+)\)", listed, re.M)
    m = re.search(r"^struct kvm_x86_ops \{(.*?)^\};", x86_text, re.M | re.S)
    members = set(re.findall(r"\(\s*\*\s*(\w+)\s*\)\s*\(", m.group(1))) if m else set()
    names = [n for n in mandatory if n in members]
    out = ["/* Generated by emulator/native/build.py from kvm-x86-ops.h; do not edit. */"]
    for n in names:
        out.append(f'static void h_op_{n}(void) {{ h_trap("kvm_x86_ops.{n} called: '
                   f'not provided by the harness"); }}')
    out.append("#define H_FILL_OPS(ops) do { \\")
    for n in names:
        out.append(f"\tif (!(ops).{n}) (ops).{n} = (void *)h_op_{n}; \\")
    out.append("} while (0)")
    return "\n".join(out) + "\n"


def replace_definition(unit: str, text: str, macro: str,
                       candidates: tuple[str, ...]) -> tuple[str, list[str]]:
    """Rename the out-of-line definition of the first candidate defined once in the
    unit; the glue defines the function instead (-DMACRO=name, -DMACRO_RET=type,
    -DMACRO_PARAMS=(the tree's own parameter list))."""
    for func in candidates:
        pattern = re.compile(rf"^(\w+)(\s+){func}(\s*(\([^;{{]*\))\s*\{{)", re.M)
        found = pattern.findall(text)
        if len(found) == 1:
            ret, params = found[0][0], " ".join(found[0][3].split())
            text = pattern.sub(rf"\1\2h_replaced_{func}\3", text)
            return text, [f"-D{macro}={func}", f"-D{macro}_RET={ret}",
                          f"-D{macro}_PARAMS={params}"]
    raise EngineError(f"{unit}: no single out-of-line definition of {' or '.join(candidates)}()")


_GCC: str | None = None


def _compiler_version() -> str:
    global _GCC
    if _GCC is None:
        proc = run(["gcc", "--version"])
        if proc.returncode != 0:
            raise EngineError("gcc not found")
        _GCC = proc.stdout.splitlines()[0]
    return _GCC


def _kernel_version(tree: Path, prep: Prepared) -> str:
    release = prep.out / "include/config/kernel.release"
    if prep.owner == str(tree) and release.exists():
        return release.read_text().strip()
    # Another tree's prepared directory: the version its Makefile says.
    try:
        head = (tree / "Makefile").read_text(errors="replace")[:2000]
    except OSError:
        return "unknown"
    v = dict(re.findall(r"^(VERSION|PATCHLEVEL|SUBLEVEL|EXTRAVERSION) = ?(\S*)", head, re.M))
    return f"{v.get('VERSION', '?')}.{v.get('PATCHLEVEL', '?')}.{v.get('SUBLEVEL', '0')}" \
           f"{v.get('EXTRAVERSION', '')}"


def _parallel(jobs: list[tuple[list[str], str, Path | None]], parallel: int = 2) -> None:
    """Run commands (argv, what, cwd), `parallel` at a time; the first error raises."""
    pending = list(jobs)
    running: list[tuple[subprocess.Popen, str]] = []
    errors: list[str] = []
    while pending or running:
        while pending and len(running) < parallel:
            cmd, what, cwd = pending.pop(0)
            running.append((subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                             text=True, cwd=cwd,
                                             env=dict(os.environ, LC_ALL="C")), what))
        proc, what = running.pop(0)
        text = proc.communicate()[0]
        if proc.returncode != 0:
            errors.append(f"{what}: {first_error(text)}")
    if errors:
        raise EngineError(f"cannot compile {errors[0]}")


def _sha(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else p.encode())
        h.update(b"\0")
    return h.hexdigest()[:24]


def _write_atomic(path: Path, data: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_bytes(data if isinstance(data, bytes) else data.encode())
    os.replace(tmp, path)


def _has_unit(udir: Path) -> bool:
    return (udir / "unit.c.gz").exists() or (udir / "unit.c").exists()


def _unit_text(udir: Path) -> str | None:
    """A cached unit's preprocessed text (gzip; entries written before that: plain)."""
    try:
        return gzip.decompress((udir / "unit.c.gz").read_bytes()).decode()
    except OSError:
        pass
    try:
        return (udir / "unit.c").read_text()
    except OSError:
        return None


class UnitCache:
    """Preprocessed units by content, found from their dependencies without preprocessing."""

    def __init__(self, root: Path, prep: Prepared, hasher: Hasher):
        self.root, self.prep, self.h = root, prep, hasher

    def _manifest(self, unit: str) -> Path:
        return self.root / "manifests" / (unit.replace("/", "_") + ".json")

    def _direct(self, unit: str, deps: list[str]) -> str:
        return self.h.digest(deps, FORMAT, self.prep.config, self.prep.digest,
                             " ".join(self.prep.templates[unit]))

    def lookup(self, unit: str) -> str | None:
        """The content key of UNIT's preprocessed text if the cache has it."""
        try:
            entries = json.loads(self._manifest(unit).read_text())
        except (OSError, ValueError):
            return None
        for entry in entries:
            key = entry["hits"].get(self._direct(unit, entry["deps"]))
            if key and _has_unit(self.root / "units" / key):
                return key
        return None

    def record(self, unit: str, deps: list[str], key: str) -> None:
        path = self._manifest(unit)
        try:
            entries = json.loads(path.read_text())
        except (OSError, ValueError):
            entries = []
        entry = next((e for e in entries if e["deps"] == deps), None)
        if entry is None:
            entry = {"deps": deps, "hits": {}}
            entries.append(entry)
        entry["hits"][self._direct(unit, deps)] = key
        _write_atomic(path, json.dumps(entries))


def preprocess(tree: Path, prep: Prepared, cache: UnitCache, units: list[str], work: Path,
               jobs: int = 2) -> dict[str, str]:
    """{unit: content key} for UNITS, preprocessing only what the cache lacks."""
    keys, todo = {}, []
    for unit in units:
        key = cache.lookup(unit)
        if key:
            keys[unit] = key
            touch(cache.root / "units" / key)   # its last use, for cache.prune()
        else:
            todo.append(unit)
    cmds, made = [], {}
    for unit in todo:
        tag = unit.replace("/", "_")[:-2]
        made[unit] = kbuild_output(prep, unit)     # a cold build has them from Kbuild
        if made[unit]:
            continue
        cmds.append((unit_command(prep, tree, unit, work / f"{tag}.i", work / f"{tag}.d"),
                     f"{unit} (preprocessing)", prep.out))
    _parallel(cmds, jobs)
    for unit in todo:
        tag = unit.replace("/", "_")[:-2]
        ipath, dpath = made[unit] or (work / f"{tag}.i", work / f"{tag}.d")
        text = ipath.read_text(errors="replace")
        # Line markers name the tree: made relative, the text is the same wherever the tree is.
        text = text.replace(f'"{tree}/', '"')
        meta: dict = {"flags": semantic_flags(prep.templates[unit])}
        if unit in REPLACED:
            text, meta["defines"] = replace_definition(unit, text, *REPLACED[unit])
        if unit == "arch/x86/kvm/x86.c":
            meta["ops"] = ops_header(tree, text)
        key = _sha(FORMAT, unit, text, json.dumps(meta, sort_keys=True))
        dest = cache.root / "units" / key
        if not _has_unit(dest):
            _write_atomic(dest / "meta.json", json.dumps(meta))
            # Compressed: 5-6 MB of text per unit version, a few hundred KB this way.
            _write_atomic(dest / "unit.c.gz", gzip.compress(text.encode(), compresslevel=1))
        deps = sorted({r for p in dep_paths(dpath.read_text(errors="replace"))
                       if (r := cache.h.rel(os.path.normpath(p if p.startswith("/")
                                                               else str(prep.out / p))))})
        cache.record(unit, deps, key)
        keys[unit] = key
    return keys


def build(tree: Path, cache_dir: Path | None = None, progress=None,
          names=None, jobs: int = 2) -> tuple[Path, str, BuildInfo]:
    """(executable, kernel version, info) for TREE; raises EngineError.

    The cache is held (cache.using()) while building, so no prune removes what this build
    uses; after it, the cache is pruned now and then (cache.prune_after_build())."""
    root = cache_root(cache_dir)
    with using(root):
        out = _build(tree, root, progress, names, jobs)
    prune_after_build(root)
    return out


def _build(tree: Path, root: Path, progress, names, jobs: int) -> tuple[Path, str, BuildInfo]:
    t0 = time.perf_counter()
    times: dict[str, float] = {}
    tree = Path(tree)
    say = progress or (lambda msg: None)
    check_tree(tree)
    tree = tree.resolve()       # Kbuild names the tree by its real path
    try:
        rules = load_rules()
        layout_text, layout_desc = layout_header(rules, tree, names)
    except (RulesError, LayoutError) as exc:
        raise EngineError(str(exc)) from None
    units = [u for u, g in UNITS if (tree / u).is_file() and (HARNESS / g).is_file()]
    try:
        prep, hasher = find_prepared(root, tree, units, jobs, say)
    except PrepareError as exc:
        raise EngineError(str(exc)) from None
    touch(prep.out)
    times["prepare"] = time.perf_counter() - t0
    version = _kernel_version(tree, prep)
    cache = UnitCache(root, prep, hasher)
    work = root / "tmp" / f"{os.getpid()}-{time.time_ns()}"
    work.mkdir(parents=True)
    try:
        t1 = time.perf_counter()
        ikeys = preprocess(tree, prep, cache, units, work, jobs)
        times["preprocess"] = time.perf_counter() - t1
        recipe = {"units": [[u, ikeys[u], g] for u, g in UNITS if u in ikeys],
                  "layout": layout_text, "harness": harness_digest()}
        objs, jobs_c, compiled = unit_objects(root, recipe, work)
        harness_o, job = harness_object(root)
        jobs_c += job
        t1 = time.perf_counter()
        compile_all(root, jobs_c, jobs, say)
        times["compile"] = time.perf_counter() - t1
        objs.append(harness_o)
        key = _sha(FORMAT, *[o.name for o in objs])[:16]
        dest = root / "engines" / key
        exe = dest / "engine"
        info_units = sorted(ikeys)
        if exe.exists():
            touch(dest)
            if not (dest / "recipe.json").exists():     # an engine built before probes
                _write_atomic(dest / "recipe.json", json.dumps(recipe))
            info = json.loads((dest / "info.json").read_text())
            return exe, version, BuildInfo(key, time.perf_counter() - t0, not compiled,
                                           layout_desc, info_units, info["stubs"], times,
                                           compiled)
        t1 = time.perf_counter()
        stubs = link_engine(objs, work, layout_desc, info_units, version, tree, say)
        (work / "engine-dir" / "recipe.json").write_text(json.dumps(recipe))
        times["link"] = time.perf_counter() - t1
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(work / "engine-dir", dest)
        return exe, version, BuildInfo(key, time.perf_counter() - t0, False, layout_desc,
                                       info_units, stubs, times, compiled)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def harness_digest() -> str:
    """What the harness sources are: an engine's recipe (recipe.json) records it, so a probe
    of the engine (probe.py) is refused once the harness has changed."""
    return _sha(*[p.read_bytes() for p in sorted(HARNESS.glob("*.[ch]")) if p.name != "probe.c"])


def unit_objects(root: Path, recipe: dict, work: Path, variant: tuple[str, ...] = (),
                 edit=None) -> tuple[list[Path], list, list[str]]:
    """(objects, compile jobs, units to compile) of a recipe's units ([unit, content key,
    glue] and the layout header); `variant`: extra compiler flags, `edit`: (tag, function)
    applied to each unit's text (the probe's; the tag is part of the objects' keys)."""
    layout_text = recipe["layout"]
    harness_h = (HARNESS / "harness.h").read_bytes()
    flags = CFLAGS + list(variant)
    common = _sha(FORMAT, _compiler_version(), " ".join(flags), layout_text, harness_h,
                  edit[0] if edit else "")
    objs, jobs_c, compiled = [], [], []
    for unit, ikey, glue in recipe["units"]:
        udir = root / "units" / ikey
        meta = json.loads((udir / "meta.json").read_text())
        okey = _sha(common, ikey, glue, (HARNESS / glue).read_bytes(), meta.get("ops", ""))
        obj = root / "objs" / f"{okey}.o"
        objs.append(obj)
        if obj.exists():
            touch(obj)
            continue
        tag = unit.replace("/", "_")[:-2]
        inc = work / tag
        inc.mkdir()
        (inc / "layout.h").write_text(layout_text)
        (inc / "ops.h").write_text(meta.get("ops", ""))
        text = _unit_text(udir)
        (inc / "kernel.c").write_text(edit[1](text) if edit else text)
        src = inc / "unit.c"
        src.write_text(f'#include "{inc / "kernel.c"}"\n{GLUE_PRAGMAS}'
                       f'#include "{HARNESS / glue}"\n')
        jobs_c.append((["gcc", "-c", *flags, *meta["flags"], *meta.get("defines", []),
                        f"-I{HARNESS}", f"-I{inc}", str(src), "-o", f"{obj}.{os.getpid()}.tmp"],
                       unit, None))
        compiled.append(unit)
    return objs, jobs_c, compiled


def harness_object(root: Path, source: str = "harness.c", weaken: bool = True
                   ) -> tuple[Path, list]:
    """(object, [its compile job] or []) of a harness file compiled on its own."""
    text = (HARNESS / source).read_bytes()
    hkey = _sha(FORMAT, _compiler_version(), " ".join(HARNESS_CFLAGS), text,
                (HARNESS / "harness.h").read_bytes())
    name = "harness" if source == "harness.c" else source[:-2]
    obj = root / "objs" / f"{name}-{hkey}.o"
    touch(obj)
    if obj.exists():
        return obj, []
    return obj, [(["gcc", "-c", *HARNESS_CFLAGS, f"-I{HARNESS}", str(HARNESS / source),
                   "-o", f"{obj}.{os.getpid()}.tmp"], source if weaken else f"{source} (strong)",
                  None)]


def compile_all(root: Path, jobs_c: list, jobs: int, say) -> None:
    """Run compile jobs, then put each object in place (harness.c weakened first)."""
    if not jobs_c:
        return
    (root / "objs").mkdir(parents=True, exist_ok=True)
    say(f"compiling {', '.join(w for _c, w, _d in jobs_c)}")
    _parallel(jobs_c, jobs)
    for cmd, what, _cwd in jobs_c:
        out = Path(cmd[-1])
        if what == "harness.c":
            # The harness gives way to the tree: what a kernel unit defines wins.
            proc = run(["objcopy", "--weaken", str(out)])
            if proc.returncode != 0:
                raise EngineError(f"objcopy failed: {first_error(proc.stderr)}")
        os.replace(out, out.with_suffix("").with_suffix(""))   # X.o.PID.tmp -> X.o


def link_engine(objs: list[Path], work: Path, layout_desc: dict, units: list[str],
                version: str, tree: Path, say) -> int:
    try:
        return link(objs, work, layout_desc, units, version, tree, say)
    except LinkError as exc:
        raise EngineError(str(exc)) from None

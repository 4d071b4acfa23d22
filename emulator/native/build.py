"""Build the native engine for a kernel tree: its own KVM C, compiled for user space.

Kbuild's single-file targets give each unit's preprocessed text (`make O=OUT
arch/x86/kvm/mmu/mmu.i`); each is compiled as an ordinary user-space object
with a glue file appended (glue_*.c, ours), linked with the harness
(harness.c, ours) and a stub file generated from what is still undefined.
The result is a non-PIE executable driven over a pipe (model.py).  Cached by
content: the preprocessed units, the harness and the compiler version.
"""
from __future__ import annotations

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

from .layout import LayoutError, layout_header
from .stubs import stub_source

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
CFLAGS = ["-O2", "-fno-pie", "-mcmodel=small", "-fno-strict-aliasing", "-fno-common",
          "-std=gnu11", "-fno-stack-protector", "-mno-red-zone", "-w"]
KVM_OPTIONS = ("KVM", "KVM_INTEL", "KVM_AMD")
# Flags of the tree's own command line that change what the C means (not how it is
# placed or hardened): taken from Kbuild's .cmd file of each unit.
SEMANTIC_FLAGS = re.compile(r"^(-fms-extensions|-f(?:un)?signed-char|-fno-strict-overflow|-fwrapv"
                            r"|-fno-delete-null-pointer-checks|-fshort-wchar|-fno-strict-aliasing"
                            r"|-ftrivial-auto-var-init=\S+|-std=\S+|-fno-builtin-\S+)$")
_DIAG = re.compile(r"^(?P<file>[^\s:]+):(?P<line>\d+):(?:\d+:)? (?:fatal )?error: (?P<msg>.*)$", re.M)


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


def cache_root(cache_dir: Path | None = None) -> Path:
    if cache_dir:
        return Path(cache_dir)
    base = os.environ.get("KVM_REFACTOR_CACHE")
    root = Path(base) if base else Path(os.environ.get("XDG_CACHE_HOME",
                                                       Path.home() / ".cache")) / "kvm-refactor"
    return root / "native"


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=dict(os.environ, LC_ALL="C"), capture_output=True,
                          text=True)


def _first_error(text: str) -> str:
    m = _DIAG.search(text)
    if m:
        return f"{m['file']}:{m['line']}: {m['msg']}"
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    for ln in lines:
        if "multiple definition" in ln or "undefined reference" in ln or "error:" in ln:
            return ln.strip()
    return lines[-1] if lines else "unknown error"


def check_tree(tree: Path) -> None:
    if not (tree / "arch/x86/kvm/mmu/mmu.c").is_file():
        raise EngineError(f"{tree}: not a kernel tree with arch/x86/kvm/mmu/mmu.c")
    if not (tree / "Makefile").is_file() or not (tree / "scripts").is_dir():
        raise EngineError(f"{tree}: not a full kernel tree (no Makefile or scripts/); get one "
                          f"with `kvm-refactor fetch-tree VERSION --full`")
    if (tree / ".config").exists():
        raise EngineError(f"{tree}: the tree is configured in place (.config); the engine "
                          "builds in its own output directory and needs a clean tree")


def configure(tree: Path, out: Path) -> None:
    """defconfig + KVM, KVM_INTEL, KVM_AMD in OUT (as refactor/kernel/build.py does)."""
    if (out / ".config").exists():
        return
    out.mkdir(parents=True, exist_ok=True)
    steps = [["make", f"O={out}", "defconfig"],
             ["scripts/config", "--file", str(out / ".config")]
             + [x for o in KVM_OPTIONS for x in ("-e", o)],
             ["make", f"O={out}", "olddefconfig"]]
    for cmd in steps:
        proc = _run(cmd, tree)
        if proc.returncode != 0:
            (out / ".config").unlink(missing_ok=True)
            raise EngineError(f"{tree}: {' '.join(cmd[:2])} failed: "
                              f"{_first_error(proc.stderr + proc.stdout)}")


def preprocess(tree: Path, out: Path, jobs: int = 2) -> dict[str, Path]:
    """Kbuild's .i targets for every unit present in the tree."""
    units = [u for u, g in UNITS if (tree / u).is_file() and (HARNESS / g).is_file()]
    targets = [u[:-2] + ".i" for u in units]
    proc = _run(["make", f"O={out}", f"-j{jobs}", "-s"] + targets, tree)
    if proc.returncode != 0:
        raise EngineError(f"{tree}: cannot preprocess KVM: {_first_error(proc.stderr + proc.stdout)}")
    return {u: out / (u[:-2] + ".i") for u in units}


def unit_flags(ipath: Path) -> list[str]:
    """The semantic flags Kbuild used for a unit (its .NAME.i.cmd), in order."""
    cmd = ipath.parent / f".{ipath.name}.cmd"
    try:
        words = cmd.read_text(errors="replace").split("\n", 1)[0].split()
    except OSError:
        return []
    out: list[str] = []
    for w in words:
        if SEMANTIC_FLAGS.match(w) and w not in out:
            out.append(w)
    return out


def ops_header(tree: Path, x86_i: Path) -> str:
    """ops.h: a trap for every mandatory kvm_x86_ops hook (KVM_X86_OP in the tree's
    kvm-x86-ops.h) that the tree's struct has; h_x86_ops' NULL ones get it before
    kvm_ops_update(), so no set-up WARN fires and a call names the hook."""
    try:
        listed = (tree / "arch/x86/include/asm/kvm-x86-ops.h").read_text(errors="replace")
    except OSError:
        return "#define H_FILL_OPS(ops) do { } while (0)\n"
    mandatory = re.findall(r"^KVM_X86_OP\((\w+)\)", listed, re.M)
    text = x86_i.read_text(errors="replace")
    m = re.search(r"^struct kvm_x86_ops \{(.*?)^\};", text, re.M | re.S)
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


def _compiler_version() -> str:
    proc = _run(["gcc", "--version"])
    if proc.returncode != 0:
        raise EngineError("gcc not found")
    return proc.stdout.splitlines()[0]


def _kernel_version(tree: Path, out: Path) -> str:
    release = out / "include/config/kernel.release"
    if release.exists():
        return release.read_text().strip()
    proc = _run(["make", "-s", "kernelversion"], tree)
    return proc.stdout.strip() or "unknown"


def _compile_all(jobs: list[tuple[list[str], str]], parallel: int = 2) -> None:
    """Run compile commands, `parallel` at a time; the first error raises."""
    pending = list(jobs)
    running: list[tuple[subprocess.Popen, str]] = []
    errors: list[str] = []
    while pending or running:
        while pending and len(running) < parallel:
            cmd, what = pending.pop(0)
            running.append((subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                             text=True, env=dict(os.environ, LC_ALL="C")), what))
        proc, what = running.pop(0)
        text = proc.communicate()[0]
        if proc.returncode != 0:
            errors.append(f"{what}: {_first_error(text)}")
    if errors:
        raise EngineError(f"cannot compile {errors[0]}")


def _symbols(objs: list[Path]) -> tuple[set[str], set[str]]:
    defined, undefined = set(), set()
    proc = _run(["nm", "-P"] + [str(o) for o in objs])
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) < 2 or parts[0].endswith(":"):
            continue
        name, kind = parts[0], parts[1]
        if kind == "U":
            undefined.add(name)
        elif kind.isupper() or kind in "vw":
            defined.add(name)
    return defined, undefined - defined


def _call_only(objs: list[Path], names: set[str]) -> set[str]:
    """Undefined symbols that are called somewhere (PLT32 relocations): functions."""
    called = set()
    proc = _run(["readelf", "-rW"] + [str(o) for o in objs])
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[2] == "R_X86_64_PLT32":
            sym = parts[4].split("@")[0]
            if sym in names:
                called.add(sym)
    return called


_LIBC: set[str] | None = None


def _libc_symbols() -> set[str]:
    """What the C library defines: left to it (memcpy, memset, strlen...)."""
    global _LIBC
    if _LIBC is None:
        proc = _run(["gcc", "-print-file-name=libc.so.6"])
        path = proc.stdout.strip()
        nm = _run(["nm", "-D", "--defined-only", path])
        _LIBC = {ln.split()[-1].split("@")[0] for ln in nm.stdout.splitlines() if ln.strip()}
    return _LIBC


def build(tree: Path, cache_dir: Path | None = None, progress=None,
          names=None) -> tuple[Path, str, BuildInfo]:
    """(executable, kernel version, info) for TREE; raises EngineError."""
    t0 = time.perf_counter()
    tree = Path(tree)
    say = progress or (lambda msg: None)
    check_tree(tree)
    try:
        rules = load_rules()
        layout_text, layout_desc = layout_header(rules, tree, names)
    except (RulesError, LayoutError) as exc:
        raise EngineError(str(exc)) from None
    root = cache_root(cache_dir)
    out = root / "out" / hashlib.sha1(str(tree.absolute()).encode()).hexdigest()[:12]
    say(f"configuring {tree} in {out}")
    configure(tree, out)
    say("preprocessing KVM units")
    units = preprocess(tree, out)
    version = _kernel_version(tree, out)

    h = hashlib.sha256()
    ops_text = ops_header(tree, units["arch/x86/kvm/x86.c"])
    for part in (_compiler_version(), " ".join(CFLAGS), layout_text, ops_text):
        h.update(part.encode())
    h.update(Path(__file__).with_name("stubs.py").read_bytes())    # the stub layer's library helpers
    for f in sorted(HARNESS.iterdir()):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    for unit, ipath in sorted(units.items()):
        h.update(unit.encode())
        h.update(" ".join(unit_flags(ipath)).encode())
        h.update(ipath.read_bytes())
    key = h.hexdigest()[:16]
    dest = root / "engines" / key
    exe = dest / "engine"
    if exe.exists():
        info = json.loads((dest / "info.json").read_text())
        return exe, version, BuildInfo(key, time.perf_counter() - t0, True, info["layout"],
                                       info["units"], info["stubs"])

    work = root / "tmp" / f"{key}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "layout.h").write_text(layout_text)
    (work / "ops.h").write_text(ops_text)
    jobs, objs = [], []
    for unit, glue in UNITS:
        if unit not in units:
            continue
        name = unit.replace("arch/x86/kvm/", "").replace("/", "_")[:-2]
        src = work / f"{name}_unit.c"
        text = units[unit].read_text(errors="replace")
        defines = []
        if unit in REPLACED:
            text, defines = replace_definition(unit, text, *REPLACED[unit])
        src.write_text(text + f'\n#include "{HARNESS / glue}"\n')
        obj = work / f"{name}.o"
        jobs.append((["gcc", "-c", *CFLAGS, *unit_flags(units[unit]), *defines, f"-I{HARNESS}", f"-I{work}", str(src), "-o", str(obj)],
                     unit))
        objs.append(obj)
    harness_o = work / "harness.o"
    jobs.append((["gcc", "-c", "-O2", "-fno-pie", "-Wall", "-Wno-unused-function",
                  f"-I{HARNESS}", str(HARNESS / "harness.c"), "-o", str(harness_o)],
                 "harness.c"))
    say(f"compiling {len(objs)} KVM units and the harness")
    _compile_all(jobs)
    # The harness gives way to the tree: what a kernel unit defines is the kernel's.
    proc = _run(["objcopy", "--weaken", str(harness_o)])
    if proc.returncode != 0:
        raise EngineError(f"objcopy failed: {_first_error(proc.stderr)}")
    objs.append(harness_o)

    defined, undefined = _symbols(objs)
    undefined -= _libc_symbols()
    functions = _call_only(objs, undefined)
    stubs_c = work / "stubs.c"
    stubs_c.write_text(stub_source(sorted(undefined), functions))
    stubs_o = work / "stubs.o"
    _compile_all([(["gcc", "-c", "-O1", "-fno-pie", "-w", str(stubs_c), "-o", str(stubs_o)],
                   "stubs.c")])
    say(f"linking ({len(undefined)} stubs)")
    proc = _run(["gcc", "-no-pie", "-rdynamic", "-o", str(work / "engine"),
                 *[str(o) for o in objs], str(stubs_o), "-ldl"])
    if proc.returncode != 0:
        raise EngineError(f"cannot link the engine: {_first_error(proc.stderr)}")
    info = {"layout": layout_desc, "units": sorted(units), "stubs": len(undefined),
            "version": version, "tree": str(tree)}
    (work / "info.json").write_text(json.dumps(info, indent=2))
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(dest, ignore_errors=True)
    work.rename(dest)
    return exe, version, BuildInfo(key, time.perf_counter() - t0, False, layout_desc,
                                   sorted(units), len(undefined))

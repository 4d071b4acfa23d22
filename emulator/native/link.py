"""Link the native engine: a stub for whatever the objects leave undefined, then the
executable (docs/native-engine.md, Stubs and Link)."""
from __future__ import annotations

import json
from pathlib import Path

from .prepare import first_error, run
from .stubs import stub_source


class LinkError(RuntimeError):
    """The engine cannot be linked; the message is one line."""


def _symbols(objs: list[Path]) -> tuple[set[str], set[str]]:
    defined, undefined = set(), set()
    proc = run(["nm", "-P"] + [str(o) for o in objs])
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
    proc = run(["readelf", "-rW"] + [str(o) for o in objs])
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
        proc = run(["gcc", "-print-file-name=libc.so.6"])
        path = proc.stdout.strip()
        nm = run(["nm", "-D", "--defined-only", path])
        _LIBC = {ln.split()[-1].split("@")[0] for ln in nm.stdout.splitlines() if ln.strip()}
    return _LIBC


def link(objs: list[Path], work: Path, layout_desc: dict, units: list[str], version: str,
         tree: Path, say) -> int:
    """Stubs for what is still undefined, then the executable in WORK/engine-dir; the
    number of stubs."""
    out = work / "engine-dir"
    out.mkdir()
    _defined, undefined = _symbols(objs)
    undefined -= _libc_symbols()
    functions = _call_only(objs, undefined)
    stubs_c = out / "stubs.c"
    stubs_c.write_text(stub_source(sorted(undefined), functions))
    stubs_o = out / "stubs.o"
    proc = run(["gcc", "-c", "-O1", "-fno-pie", "-w", str(stubs_c), "-o", str(stubs_o)])
    if proc.returncode != 0:
        raise LinkError(f"cannot compile stubs.c: {first_error(proc.stderr)}")
    say(f"linking ({len(undefined)} stubs)")
    proc = run(["gcc", "-no-pie", "-rdynamic", "-o", str(out / "engine"),
                *[str(o) for o in objs], str(stubs_o), "-ldl"])
    if proc.returncode != 0:
        raise LinkError(f"cannot link the engine: {first_error(proc.stderr)}")
    info = {"layout": layout_desc, "units": units, "stubs": len(undefined),
            "version": version, "tree": str(tree), "objects": [o.name for o in objs]}
    (out / "info.json").write_text(json.dumps(info, indent=2))
    return len(undefined)

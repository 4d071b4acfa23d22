"""Which of a tree's functions ran in an event: the probe variant of an engine.

`verify` reports a divergence with the rewrite sites in the functions that
executed.  A BUG names its file:line; a plain divergence (another GPA, another
fault) names nothing, so the episode is replayed on the *probe* of the same
engine: the same unit texts (the engine's recipe.json: content keys of its
preprocessed units and its layout header), compiled with
`-finstrument-functions` and linked with harness/probe.c, which records the
functions entered during the last event.  Built only when asked (never for a
normal run: the normal engine does not change), cached by content like every
engine (`objs/`, `engines/`), so a second divergence of the same tree, or the
same tree in another run, reuses it.  docs/native-engine.md, "Which functions
ran".
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from .build import (FORMAT, EngineError, compile_all, harness_digest, harness_object,
                    link_engine, unit_objects)
from .cache import touch, using
from .prepare import run

PROBE_FLAGS = ("-finstrument-functions",)
# The kernel's `inline` is `notrace`: no_instrument_function (compiler_types.h), and most
# rewrite sites are inline functions of KVM's headers (mmu.h: kvm_translate_gpa(),
# permission_fault()...).  The probe takes the attribute off where a KVM file defines a
# function that is not __always_inline (an out-of-line copy of one of those would not
# compile: BUILD_BUG_ON(!__builtin_constant_p(req)) in kvm_make_request(), "i" asm
# operands of arch helpers); elsewhere it stays.  Same lines, same code otherwise.
_MARKER = re.compile(r'^# \d+ "([^"]*)"')
_NOTRACE = re.compile(r"__attribute__\(\((?:__)?no_instrument_function(?:__)?\)\)")
_KVM_FILE = re.compile(r"^(?!/).*(?:^|/)kvm[/_]")
# Events the harness answers without entering the tree's code (harness.c: apply()).
HARNESS_ONLY = frozenset({"write", "read", "cpl", "ac"})
TIMEOUT = 60.0
# GCC's clones of a function (foo.constprop.0, foo.isra.0, foo.part.0, foo.cold): foo.
_CLONE = re.compile(r"\..*$")


def probe_build(engine: Path, progress=None, jobs: int = 2) -> Path:
    """The probe executable of ENGINE (an engine path from build()); EngineError if the
    engine has no recipe or its units or harness are no longer those of the engine."""
    engine = Path(engine)
    edir = engine.parent
    root = edir.parent.parent
    say = progress or (lambda msg: None)
    try:
        recipe = json.loads((edir / "recipe.json").read_text())
    except (OSError, ValueError):
        raise EngineError(f"{edir}: no recipe.json (an engine built before probes: "
                          "build it again)") from None
    if recipe.get("harness") != harness_digest():
        raise EngineError(f"{edir}: the harness changed since this engine was built")
    with using(root):
        work = root / "tmp" / f"{os.getpid()}-{time.time_ns()}-probe"
        work.mkdir(parents=True)
        try:
            for _unit, ikey, _glue in recipe["units"]:
                if not (root / "units" / ikey / "meta.json").exists():
                    raise EngineError(f"{edir}: unit {ikey} is no longer cached")
            objs, jobs_c, _compiled = unit_objects(root, recipe, work, PROBE_FLAGS, EDIT)
            harness_o, job = harness_object(root)
            probe_o, pjob = harness_object(root, "probe.c", weaken=False)
            compile_all(root, jobs_c + job + pjob, jobs, say)
            objs += [harness_o, probe_o]
            key = hashlib.sha256("\0".join([FORMAT, "probe", *[o.name for o in objs]])
                                 .encode()).hexdigest()[:16]
            dest = root / "engines" / f"probe-{key}"
            exe = dest / "engine"
            if exe.exists():
                touch(dest)
                return exe
            info = json.loads((edir / "info.json").read_text())
            link_engine(objs, work, info.get("layout", {}), info.get("units", []),
                        info.get("version", ""), Path(info.get("tree", "")), say)
            out = work / "engine-dir"
            (out / "functions.json").write_text(json.dumps(_function_symbols(out / "engine")))
            shutil.rmtree(dest, ignore_errors=True)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(out, dest)
            return exe
        finally:
            shutil.rmtree(work, ignore_errors=True)


def trace_kvm_inlines(text: str) -> str:
    """UNIT text with `notrace` taken off the functions KVM's own files define."""
    out = text.split("\n")
    kvm = False
    for i, line in enumerate(out):
        if line.startswith("# "):
            m = _MARKER.match(line)
            if m:
                kvm = bool(_KVM_FILE.match(m.group(1)))
        elif kvm and "no_instrument_function" in line and "__always_inline__" not in line:
            out[i] = _NOTRACE.sub("", line)
    return "\n".join(out)


EDIT = ("kvm-inlines-traced-2", trace_kvm_inlines)   # bump the tag when the edit changes


def _function_symbols(exe: Path) -> dict[str, str]:
    """{hex address: name} of the executable's functions (static ones included)."""
    proc = run(["nm", "--defined-only", str(exe)])
    out: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "tTwW":
            out.setdefault(format(int(parts[0], 16), "x"), _CLONE.sub("", parts[2]))
    return out


def functions_run(engine: Path, episode: list[dict], pack, progress=None,
                  timeout: float = TIMEOUT) -> list[str]:
    """Names of the functions of the tree's code that ran in the last event of EPISODE
    (events from its reset on), in order of first entry; replayed on ENGINE's probe.
    `pack`: model.pack() (the protocol's encoder; model.py imports this module)."""
    if not episode or episode[-1].get("ev") in HARNESS_ONLY:
        return []
    exe = probe_build(engine, progress)
    names = json.loads((exe.parent / "functions.json").read_text())
    # A first answered event shows the engine running (the SIGUSR1 handler installed).
    head = episode[:-1] or [{"ev": "read", "addr": 0, "size": 8}]
    with tempfile.TemporaryDirectory(prefix="kvm-probe-") as tmp:
        dump = Path(tmp) / "ran"
        proc = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL,
                                env=dict(os.environ, H_PROBE_OUT=str(dump)))
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _ask(proc, *pack(head)[:2])
            # Delivered before the engine returns from its next read: the functions of
            # the last event are recorded from an empty set.
            proc.send_signal(signal.SIGUSR1)
            _ask(proc, *pack(episode[-1:])[:2])
            proc.stdin.close()      # end of input: the engine exits, probe.c writes the dump
            proc.wait()
        except (OSError, ValueError) as exc:
            raise EngineError(f"probe engine {exe}: {exc}") from None
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        if proc.returncode != 0 or not dump.exists():
            raise EngineError(f"probe engine {exe} ended with status {proc.returncode}")
        ran = [names.get(a.strip()) for a in dump.read_text().split()]
    out: list[str] = []
    for name in ran:
        if name and name not in out:
            out.append(name)
    return out


def _ask(proc: subprocess.Popen, data: bytes, n: int) -> None:
    """Send N packed events and read their answers (one line each); a writer thread, so a
    long episode cannot fill both pipes."""
    writer = threading.Thread(target=_write, args=(proc, data), daemon=True)
    writer.start()
    have = 0
    while have < n:
        chunk = proc.stdout.read1(1 << 16)
        if not chunk:
            raise ValueError("the engine ended before answering")
        have += chunk.count(b"\n")
    writer.join()


def _write(proc: subprocess.Popen, data: bytes) -> None:
    try:
        proc.stdin.write(data)
        proc.stdin.flush()
    except (OSError, ValueError):
        pass

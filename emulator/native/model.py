"""NativeBuild / NativeModel: drive a built engine over a pipe, one event per line.

NativeModel has the interface of emulator.machine.Model that run_pair uses
(apply, translations, translate_time), so two trees, or the Python model and
a tree, are compared by the same code.  `stream()` pipelines a whole trace
for throughput (no round trip per event).
"""
from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterable, Iterator

from ..machine import ACCESSES
from .build import BuildInfo, EngineError, build

ACCESS_CODE = {name: i for i, name in enumerate(ACCESSES)}


def encode(ev: dict) -> str:
    """One protocol line for a checked trace event (docs/native-engine.md)."""
    kind = ev["ev"]
    g = ev.get
    if kind == "reset":
        args = (int(g("tdp", True)), g("maxphyaddr", 46))
    elif kind == "translate":
        args = (ACCESS_CODE[ev["access"]], ev["addr"])
    elif kind == "write":
        args = (ev["addr"], ev["val"], g("size", 8))
    elif kind == "read":
        args = (ev["addr"], g("size", 8))
    elif kind == "cr0":
        args = (ev["val"], int(g("passthrough", False)))
    elif kind in ("cr3", "cr4", "efer", "cpl", "ac", "pkru"):
        args = (ev["val"],)
    elif kind == "invlpg":
        args = (ev["addr"],)
    elif kind == "nested_entry":
        args = (int(g("vendor", "vmx") == "svm"), int(bool(g("tdp", False))), g("root", 0),
                int(bool(g("ad", False))), int(bool(g("execonly", True))),
                int(bool(g("pf_intercept", False))), ev["cr0"], ev["cr3"], ev["cr4"],
                ev["efer"], g("cpl", 0))
    elif kind in ("nested_exit", "reset_context"):
        args = ()
    else:
        raise ValueError(f"unknown event {kind!r}")
    return " ".join([kind, *map(str, args)]) + "\n"


def decode(line: str) -> dict:
    r = json.loads(line)
    if "ad" in r:   # the Python model logs (address, bits) tuples
        r["ad"] = [tuple(x) for x in r["ad"]]
    return r


class NativeModel:
    """One running engine process: a fresh vCPU at every reset event."""

    def __init__(self, build: "NativeBuild"):
        self.build = build
        self.translations = 0
        self.translate_time = 0.0
        self._own = None      # the interactive process, started by the first apply()

    @property
    def _proc(self) -> subprocess.Popen:
        if self._own is None:
            self._own = self._spawn()
        return self._own

    @_proc.setter
    def _proc(self, proc: subprocess.Popen) -> None:
        self._own = proc

    def _spawn(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([str(self.build.path), *args], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                bufsize=1)

    def _died(self, proc: subprocess.Popen) -> EngineError:
        err = (proc.stderr.read() if proc.stderr else "").strip().splitlines()
        return EngineError(f"native engine for {self.build.tree} exited "
                           f"({proc.poll()}): {err[-1] if err else 'no message'}")

    def apply(self, ev: dict) -> dict:
        proc = self._proc
        line = encode(ev)
        t0 = time.perf_counter()
        try:
            proc.stdin.write(line)
            proc.stdin.flush()
            out = proc.stdout.readline()
        except BrokenPipeError:
            out = ""
        if not out:
            raise self._died(proc)
        if ev["ev"] == "translate":
            self.translate_time += time.perf_counter() - t0
            self.translations += 1
        return decode(out)

    def stream(self, events: Iterable[dict], raw: bool = False) -> Iterator[dict | str]:
        """Results of EVENTS, pipelined through a separate batch-mode process.

        raw=True yields the JSON lines undecoded: two engines' results are
        equal exactly when their lines are (one harness writes both), which
        is the fast way to compare trees."""
        proc = self._spawn("--batch")

        def feed():
            try:
                for ev in events:
                    proc.stdin.write(encode(ev))
                proc.stdin.write("quit\n")
                proc.stdin.close()
            except (BrokenPipeError, ValueError):
                pass

        writer = threading.Thread(target=feed, daemon=True)
        writer.start()
        try:
            for line in proc.stdout:
                yield line if raw else decode(line)
        finally:
            writer.join(timeout=5)
            if proc.wait() not in (0, None):
                raise self._died(proc)

    def close(self) -> None:
        proc = self._own
        if proc is None:
            return
        if proc.poll() is None:
            try:
                proc.stdin.write("quit\n")
                proc.stdin.close()
            except (BrokenPipeError, ValueError):
                pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for fh in (proc.stdout, proc.stderr):
            if fh:
                fh.close()

    def __del__(self):
        try:
            self.close()
        except Exception:   # interpreter shutdown
            pass


class NativeBuild:
    """A built engine for one tree."""

    def __init__(self, tree: Path, version: str, path: Path, info: BuildInfo):
        self.tree, self.version, self.path, self.info = tree, version, path, info

    def model(self) -> NativeModel:
        return NativeModel(self)

    def __repr__(self) -> str:
        return f"NativeBuild({str(self.tree)!r}, {self.version!r}, {self.info.layout.get('layout')})"


def build_engine(tree: Path, *, cache_dir: Path | None = None, progress=None,
                 names=None) -> NativeBuild:
    """Build (or take from the cache) the engine for a full kernel tree."""
    path, version, info = build(Path(tree), cache_dir, progress, names)
    return NativeBuild(Path(tree), version, path, info)

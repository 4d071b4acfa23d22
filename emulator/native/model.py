"""NativeBuild / NativeModel: drive a built engine over a binary pipe protocol.

NativeModel has the interface of emulator.machine.Model that run_pair uses
(apply, translations, translate_time): one event, one round trip.  For
throughput, `apply_many()`, `stream()` and `run_packed()` send events in
batches (packed 64-bit words, docs/native-engine.md) and read the answers in
bulk; `pack()` encodes a stream once for several engines, and `send()` /
`receive()` run one packed chunk on several engines at the same time.  The
engine stays a separate process: whatever the kernel's code does, the tool
survives it.
"""
from __future__ import annotations

import fcntl
import json
import os
import queue
import subprocess
import threading
import time
from array import array
from collections import deque
from pathlib import Path
from typing import Iterable, Iterator

from ..machine import ACCESSES
from .build import BuildInfo, EngineError, build

ACCESS_CODE = {name: i for i, name in enumerate(ACCESSES)}
# Operation codes of the engine (harness.c: OP_*); 0 is quit.
OPS = ("quit", "reset", "translate", "write", "read", "cr0", "cr3", "cr4", "efer", "cpl",
       "ac", "pkru", "invlpg", "nested_entry", "nested_exit", "reset_context")
MAGIC = 0x4B564D << 40
BATCH_EVENTS = 16384         # events per chunk: fewer chunks, less driver time per event
PIPE_BYTES = 1 << 20         # asked of the kernel for both pipes (fewer wake-ups)
# One answer line is at most 64 KiB (harness.c: out[]).  A read of PIPE_BYTES costs ~30 us
# of CPU whatever it returns (the 1 MiB buffer is mapped and unmapped): fine once per
# chunk, most of the time of a one-event round trip (apply()).
LINE_READ = 1 << 16
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)


def _head(kind: str, nargs: int) -> int:
    return MAGIC | nargs << 8 | OPS.index(kind)


def _encoders() -> dict:
    h = {k: _head(k, n) for k, n in (("reset", 2), ("translate", 2), ("write", 3), ("read", 2),
                                     ("cr0", 2), ("cr3", 1), ("cr4", 1), ("efer", 1),
                                     ("cpl", 1), ("ac", 1), ("pkru", 1), ("invlpg", 1),
                                     ("nested_entry", 12), ("nested_exit", 0),
                                     ("reset_context", 0))}
    acc = ACCESS_CODE

    def one(kind):
        head = h[kind]
        return lambda ev: (head, ev["val"])

    enc = {
        "reset": lambda ev: (h["reset"], int(ev.get("tdp", True)), ev.get("maxphyaddr", 46)),
        "translate": lambda ev: (h["translate"], acc[ev["access"]], ev["addr"]),
        "write": lambda ev: (h["write"], ev["addr"], ev["val"], ev.get("size", 8)),
        "read": lambda ev: (h["read"], ev["addr"], ev.get("size", 8)),
        "cr0": lambda ev: (h["cr0"], ev["val"], int(ev.get("passthrough", False))),
        "invlpg": lambda ev: (h["invlpg"], ev["addr"]),
        "nested_entry": lambda ev: (
            h["nested_entry"], int(ev.get("vendor", "vmx") == "svm"),
            int(bool(ev.get("tdp", False))), ev.get("root", 0), int(bool(ev.get("ad", False))),
            int(bool(ev.get("execonly", True))), int(bool(ev.get("pf_intercept", False))),
            ev["cr0"], ev["cr3"], ev["cr4"], ev["efer"], ev.get("cpl", 0),
            int(bool(ev.get("mbec", False)))),
        "nested_exit": lambda ev: (h["nested_exit"],),
        "reset_context": lambda ev: (h["reset_context"],),
    }
    for kind in ("cr3", "cr4", "efer", "cpl", "ac", "pkru"):
        enc[kind] = one(kind)
    return enc


ENCODERS = _encoders()
QUIT = array("Q", [MAGIC]).tobytes()


def words(ev: dict) -> tuple[int, ...]:
    """The protocol words of one checked trace event (header, arguments)."""
    try:
        enc = ENCODERS[ev["ev"]]
    except KeyError:
        raise ValueError(f"unknown event {ev.get('ev')!r}") from None
    return tuple(w & 0xFFFFFFFFFFFFFFFF for w in enc(ev))


def encode(ev: dict) -> bytes:
    """One event as the engine reads it (docs/native-engine.md)."""
    return array("Q", words(ev)).tobytes()


def pack(events: Iterable[dict]) -> tuple[bytes, int, int]:
    """(packed events, number of events, number of translations): encode once, run on
    several engines with run_packed()."""
    buf = array("Q")
    ext = buf.extend
    enc = ENCODERS
    acc = ACCESS_CODE
    h_tr, h_wr = ENCODERS["translate"]({"access": "read", "addr": 0})[0], _head("write", 3)
    n = translations = 0
    try:
        # The two kinds that make most of a stream are inlined (no call per event).
        for ev in events:
            kind = ev["ev"]
            if kind == "translate":
                ext((h_tr, acc[ev["access"]], ev["addr"]))
                translations += 1
            elif kind == "write":
                ext((h_wr, ev["addr"], ev["val"], ev.get("size", 8)))
            else:
                ext(enc[kind](ev))
            n += 1
    except (KeyError, OverflowError, TypeError):
        # The slow path says which event and why (unknown kind, a value out of range).
        buf = array("Q")
        n = translations = 0
        for ev in events:
            buf.extend(words(ev))
            n += 1
            translations += ev["ev"] == "translate"
    return buf.tobytes(), n, translations


def decode(line: bytes | str) -> dict:
    r = json.loads(line)
    if "ad" in r:   # the Python model logs (address, bits) tuples
        r["ad"] = [tuple(x) for x in r["ad"]]
    return r


def decode_many(lines: list[bytes]) -> list[dict]:
    """decode() of many lines: one JSON document, a fraction of the cost per line."""
    out = json.loads(b"[" + b",".join(lines) + b"]")
    for r in out:
        if "ad" in r:
            r["ad"] = [tuple(x) for x in r["ad"]]
    return out


def _chunks(events: Iterable[dict], size: int) -> Iterator[tuple[bytes, int, int]]:
    batch: list[dict] = []
    for ev in events:
        batch.append(ev)
        if len(batch) >= size:
            yield pack(batch)
            batch = []
    if batch:
        yield pack(batch)


class _Died(Exception):
    """The engine ended before answering everything: the answers it gave, and why."""

    def __init__(self, lines: list[bytes], error: EngineError):
        super().__init__(str(error))
        self.lines, self.error = lines, error


class NativeModel:
    """One running engine process: a fresh vCPU at every reset event."""

    def __init__(self, build: "NativeBuild"):
        self.build = build
        self.translations = 0
        self.translate_time = 0.0
        self._own = None      # the engine process, started by the first event

    @property
    def _proc(self) -> subprocess.Popen:
        if self._own is None:
            self._own = self._spawn()
        return self._own

    @_proc.setter
    def _proc(self, proc: subprocess.Popen) -> None:
        self._own = proc

    def _spawn(self) -> subprocess.Popen:
        proc = subprocess.Popen([str(self.build.path)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        for fh in (proc.stdin, proc.stdout):
            try:
                fcntl.fcntl(fh.fileno(), _F_SETPIPE_SZ, PIPE_BYTES)
            except OSError:   # a lower limit (fs.pipe-max-size): the default works too
                pass
        try:
            proc.h_pipe = fcntl.fcntl(proc.stdin.fileno(), _F_GETPIPE_SZ)
        except OSError:
            proc.h_pipe = 4096
        proc.h_pending = b""   # answers read but not yet consumed
        proc.h_writer = None   # send()'s writer thread, when a chunk exceeds the pipe
        return proc

    def _died(self, proc: subprocess.Popen) -> EngineError:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        try:    # read only from a process that has ended: its stderr is complete
            err = proc.stderr.read() if proc.stderr and proc.poll() is not None else b""
            err = err.decode(errors="replace")
        except (OSError, ValueError):
            err = ""
        err = err.strip().splitlines()
        return EngineError(f"native engine for {self.build.tree} exited "
                           f"({proc.poll()}): {err[-1] if err else 'no message'}")

    def _block(self, proc: subprocess.Popen, count: int, size: int = PIPE_BYTES) -> bytes:
        """The next COUNT answer lines, as one block (each line ends with a newline);
        `size`: bytes asked of each read."""
        data = proc.h_pending
        have = data.count(b"\n")
        parts = [data]
        fd = proc.stdout.fileno()
        while have < count:
            try:
                more = os.read(fd, size)
            except (OSError, ValueError):
                more = b""
            if not more:
                proc.h_pending = b""
                raise _Died(b"".join(parts).split(b"\n")[:-1], self._died(proc))
            have += more.count(b"\n")
            parts.append(more)
        data = b"".join(parts)
        # The engine may have answered part of the next chunk: cut after the COUNT-th line,
        # found from the end (the lines beyond it are few).
        end = data.rfind(b"\n")
        for _ in range(have - count):
            end = data.rfind(b"\n", 0, end)
        proc.h_pending = data[end + 1:]
        return data[:end + 1]

    def _lines(self, proc: subprocess.Popen, count: int) -> list[bytes]:
        """The next COUNT answer lines (without their newlines)."""
        return self._block(proc, count).split(b"\n")[:-1] if count else []

    def apply(self, ev: dict) -> dict:
        proc = self._proc
        data = encode(ev)
        t0 = time.perf_counter()
        try:
            os.write(proc.stdin.fileno(), data)
        except (OSError, ValueError):
            raise self._died(proc) from None
        try:
            line = self._block(proc, 1, LINE_READ)[:-1]
        except _Died as died:
            raise died.error from None
        if ev["ev"] == "translate":
            self.translate_time += time.perf_counter() - t0
            self.translations += 1
        return decode(line)

    def functions_run(self, episode: list[dict]) -> list[str]:
        """The tree's functions that ran in the last event of EPISODE (from its reset on):
        replayed on this build's probe engine, built on first use (probe.py)."""
        from .probe import functions_run
        return functions_run(self.build.path, episode, pack)

    def run_packed(self, chunks: Iterable[tuple[bytes, int, int]]) -> Iterator[bytes]:
        """Answer lines (bytes, no newline) for chunks of pack()ed events, pipelined: a
        writer thread sends the next chunk while this one's answers are read.  If the
        engine dies, the answers it gave come first, then EngineError."""
        for block in self.run_blocks(chunks):
            yield from block.split(b"\n")[:-1]

    def run_blocks(self, chunks: Iterable[tuple[bytes, int, int]]) -> Iterator[bytes]:
        """run_packed(), one block of newline-terminated answer lines per chunk: two
        engines' chunks are compared with one `==` (split only where they differ)."""
        for lines in self._run_chunks(chunks, blocks=True):
            yield lines

    def _run_chunks(self, chunks: Iterable[tuple[bytes, int, int]],
                    blocks: bool = False) -> Iterator:
        proc = self._proc
        todo: queue.Queue = queue.Queue(maxsize=2)
        fd = proc.stdin.fileno()

        def writer():
            broken = False
            while (data := todo.get()) is not None:
                view = memoryview(data)
                while view and not broken:
                    try:
                        view = view[os.write(fd, view):]
                    except (OSError, ValueError):
                        broken = True     # the engine died: the reader says so
        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        counts: deque = deque()
        complete = False
        read = self._block if blocks else self._lines
        try:
            for data, n, translations in chunks:
                todo.put(data)
                counts.append(n)
                self.translations += translations
                while len(counts) > 1:
                    yield read(proc, counts.popleft())
            while counts:
                yield read(proc, counts.popleft())
            complete = True
        except _Died as died:
            if died.lines:
                yield b"".join(x + b"\n" for x in died.lines) if blocks else died.lines
            raise died.error from None
        finally:
            todo.put(None)
            if not complete:
                # Abandoned or failed half-way: answers are still coming; start afresh.
                self._kill(proc)
            thread.join(timeout=5)

    def apply_many(self, events: Iterable[dict], raw: bool = False) -> list:
        """Results of EVENTS in order, sent as one pipelined batch."""
        out: list = []
        for lines in self._run_chunks(_chunks(events, BATCH_EVENTS)):
            out += lines if raw else decode_many(lines)
        return out

    def stream(self, events: Iterable[dict], raw: bool = False) -> Iterator[dict | bytes]:
        """Results of EVENTS as they come, chunks of BATCH_EVENTS in flight.

        raw=True yields the JSON lines undecoded (bytes): two engines' results are
        equal exactly when their lines are (one harness writes both), which is
        the fast way to compare trees."""
        for lines in self._run_chunks(_chunks(events, BATCH_EVENTS)):
            yield from lines if raw else decode_many(lines)

    def send(self, data: bytes) -> None:
        """Start one chunk of pack()ed events (receive() reads its answers): several
        engines are sent their chunk before any is read, so they run at the same time.
        Counts no translations (the caller knows which of them count)."""
        proc = self._proc
        fd = proc.stdin.fileno()
        if len(data) <= proc.h_pipe:
            # The engine has read everything before (its answers were all received), so
            # the pipe is empty and takes the chunk in one write, without a thread.
            try:
                os.write(fd, data)
            except (OSError, ValueError):
                pass          # the engine died: receive() says so
            return

        def writer():
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(fd, view):]
            except (OSError, ValueError):
                pass
        proc.h_writer = threading.Thread(target=writer, daemon=True)
        proc.h_writer.start()

    def receive(self, count: int) -> bytes:
        """The answers of the chunk send() started: COUNT newline-terminated lines in one
        block.  If the engine died (or was kill()ed), EngineError; the process is gone
        and the model starts a new one at its next event."""
        proc = self._proc
        try:
            block = self._block(proc, count) if count else b""
        except _Died as died:
            self._kill(proc)
            raise died.error from None
        finally:
            if proc.h_writer is not None:
                proc.h_writer.join(timeout=5)
                proc.h_writer = None
        return block

    def kill(self) -> None:
        """End the running engine at once (from a watchdog thread: a chunk that hangs)."""
        proc = self._own
        if proc is not None and proc.poll() is None:
            try:
                proc.kill()
            except OSError:
                pass

    def _kill(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.h_pending = b""
        for fh in (proc.stdin, proc.stdout, proc.stderr):
            try:
                fh.close()
            except (OSError, ValueError):
                pass
        if self._own is proc:
            self._own = None

    def close(self) -> None:
        proc = self._own
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.write(proc.stdin.fileno(), QUIT)
                proc.stdin.close()
            except (OSError, ValueError):
                pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for fh in (proc.stdin, proc.stdout, proc.stderr):
            try:
                fh.close()
            except (OSError, ValueError):
                pass

    def __del__(self):
        try:
            self.close()
        except Exception:   # interpreter shutdown
            pass


def answer_blocks(events: list[dict], models: list) -> list[bytes] | None:
    """Each native model's answers to EVENTS (one block of lines each), the engines
    running at the same time; None if a model is not a native engine or an engine died
    (its process is restarted: the caller runs the events one at a time, which says
    where).  Translations are the caller's to count; `translate_time` gets the wall
    time of the round trip."""
    if not events or not all(isinstance(m, NativeModel) for m in models):
        return None
    try:
        data, n, _translations = pack(events)
    except Exception:     # noqa: BLE001 -- one event at a time raises it where it is
        return None
    t0 = time.perf_counter()
    for m in models:
        m.send(data)
    blocks = []
    for m in models:
        try:
            blocks.append(m.receive(n))
        except RuntimeError:
            blocks.append(None)
    wall = time.perf_counter() - t0
    for m in models:
        m.translate_time += wall
    return None if None in blocks else blocks


class NativeBuild:
    """A built engine for one tree."""

    def __init__(self, tree: Path, version: str, path: Path, info: BuildInfo):
        self.tree, self.version, self.path, self.info = tree, version, path, info

    def model(self) -> NativeModel:
        return NativeModel(self)

    def __repr__(self) -> str:
        layout = self.info.layout.get("layout") if self.info else None
        return f"NativeBuild({str(self.tree)!r}, {self.version!r}, {layout})"


def build_engine(tree: Path, *, cache_dir: Path | None = None, progress=None,
                 names=None) -> NativeBuild:
    """Build (or take from the cache) the engine for a full kernel tree."""
    path, version, info = build(Path(tree), cache_dir, progress, names)
    return NativeBuild(Path(tree), version, path, info)

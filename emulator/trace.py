"""Traces: JSON Lines events, read and checked one line at a time (see docs/trace-format.md).

Reading is a generator so a trace of any length runs in bounded memory;
running both layouts compares every event's result as it goes.
"""
from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from .machine import ACCESSES, Model

INT, BOOL, STR = "int", "bool", "str"
# Event name -> {field: (type, required)}.
SCHEMA: dict[str, dict[str, tuple[str, bool]]] = {
    "reset": {"tdp": (BOOL, False), "maxphyaddr": (INT, False)},
    "cr0": {"val": (INT, True), "passthrough": (BOOL, False)},
    "cr3": {"val": (INT, True)},
    "cr4": {"val": (INT, True)},
    "efer": {"val": (INT, True)},
    "cpl": {"val": (INT, True)},
    "ac": {"val": (INT, True)},
    "pkru": {"val": (INT, True)},
    "write": {"addr": (INT, True), "val": (INT, True), "size": (INT, False)},
    "read": {"addr": (INT, True), "size": (INT, False)},
    "nested_entry": {"vendor": (STR, False), "tdp": (BOOL, False), "root": (INT, False),
                     "ad": (BOOL, False), "execonly": (BOOL, False),
                     "pf_intercept": (BOOL, False), "cr0": (INT, True), "cr3": (INT, True),
                     "cr4": (INT, True), "efer": (INT, True), "cpl": (INT, False),
                     "mbec": (BOOL, False)},
    "nested_exit": {},
    "translate": {"addr": (INT, True), "access": (STR, True)},
    "invlpg": {"addr": (INT, True)},
    "reset_context": {},
}
CHOICES = {("translate", "access"): ACCESSES, ("nested_entry", "vendor"): ("vmx", "svm"),
           ("write", "size"): (4, 8), ("read", "size"): (4, 8), ("cpl", "val"): (0, 1, 2, 3),
           ("reset", "maxphyaddr"): tuple(range(32, 53))}


class TraceError(ValueError):
    """A malformed trace: carries the file and line."""

    def __init__(self, path: str, line: int, message: str):
        super().__init__(f"{path}:{line}: {message}" if line else f"{path}: {message}")
        self.path, self.line, self.message = path, line, message


def _value(kind: str, v, name: str):
    if kind == INT:
        if isinstance(v, str):
            try:
                v = int(v, 0)
            except ValueError:
                raise ValueError(f"field {name!r}: {v!r} is not an integer") from None
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"field {name!r}: expected an integer")
        if v < 0 or v >= 1 << 64:
            raise ValueError(f"field {name!r}: {v} is not a 64-bit unsigned value")
        return v
    if kind == BOOL:
        if not isinstance(v, bool):
            raise ValueError(f"field {name!r}: expected true or false")
        return v
    if not isinstance(v, str):
        raise ValueError(f"field {name!r}: expected a string")
    return v


def check_event(obj) -> dict:
    """Validate one decoded event; returns it with integers normalised."""
    if not isinstance(obj, dict):
        raise ValueError("an event must be a JSON object")
    kind = obj.get("ev")
    if kind not in SCHEMA:
        raise ValueError(f"unknown or missing event type {kind!r} (field 'ev')")
    spec = SCHEMA[kind]
    out = {"ev": kind}
    for name, v in obj.items():
        if name == "ev" or name.startswith("_"):   # "_..." fields are comments
            continue
        if name not in spec:
            raise ValueError(f"{kind}: unknown field {name!r}")
        out[name] = _value(spec[name][0], v, name)
        allowed = CHOICES.get((kind, name))
        if allowed is not None and out[name] not in allowed:
            raise ValueError(f"{kind}: field {name!r} must be one of {list(allowed)}")
    for name, (_t, required) in spec.items():
        if required and name not in out:
            raise ValueError(f"{kind}: missing field {name!r}")
    return out


MAX_LINE_BYTES = 1024 * 1024


def read_events(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, event) for each non-blank line; raises TraceError."""
    path = str(path)
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise TraceError(path, 0, f"cannot open: {exc.strerror}") from None
    with fh:
        if stat.S_ISCHR(os.fstat(fh.fileno()).st_mode) or stat.S_ISBLK(os.fstat(fh.fileno()).st_mode):
            raise TraceError(path, 0, "a device, not a trace file")
        first = True
        # Lines are bounded: an event is a few hundred bytes, a gigabyte "line" is not a trace.
        for lineno, raw in enumerate(iter(lambda: fh.readline(MAX_LINE_BYTES + 1), b""), 1):
            if len(raw) > MAX_LINE_BYTES:
                raise TraceError(path, lineno, f"line longer than {MAX_LINE_BYTES} bytes")
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise TraceError(path, lineno, f"not UTF-8 (byte {exc.start + 1} of the line)") from None
            if not line.strip():
                continue
            try:
                ev = check_event(json.loads(line))
            except json.JSONDecodeError as exc:
                raise TraceError(path, lineno, f"invalid JSON: {exc.msg}") from None
            except RecursionError:
                raise TraceError(path, lineno, "JSON nested too deeply") from None
            except ValueError as exc:
                raise TraceError(path, lineno, str(exc)) from None
            if first and ev["ev"] != "reset":
                raise TraceError(path, lineno, "a trace must start with a reset event")
            first = False
            yield lineno, ev
        if first:
            raise TraceError(path, 0, "empty trace")


def write_events(path: str | Path, events: Iterable[dict]) -> int:
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        for ev in events:
            fh.write(json.dumps(ev, separators=(",", ":")) + "\n")
            n += 1
    return n


@dataclass
class Divergence:
    event: int            # 1-based event number
    line: int
    ev: dict
    old: dict
    new: dict

    def as_dict(self) -> dict:
        return {"event": self.event, "line": self.line, "ev": self.ev,
                "old": self.old, "new": self.new}


@dataclass
class RunReport:
    events: int = 0
    translations: int = 0
    divergence: Divergence | None = None
    seconds: dict = field(default_factory=dict)


def entry_failed(ev: dict, result: dict) -> bool:
    """A VM-entry KVM fails (L2's PDPTEs cannot be loaded): the trace format lets L2 run on
    from a state the kernel never continues from, where the layouts may legitimately keep
    different stale PDPTEs, so comparing stops until the next reset (docs/trace-format.md)."""
    return ev["ev"] == "nested_entry" and result.get("pdptrs") is False


def run_pair(events: Iterable[tuple[int, dict]], old: Model, new: Model, path: str = "<trace>",
             stop_at_first: bool = True) -> RunReport:
    """Apply each event to both layouts and compare the results.

    The old layout is the reference: if it cannot apply an event the trace is
    malformed (TraceError), whatever the new layout does.
    """
    report = RunReport()
    stopped = False          # past a failed VM-entry of this episode: not compared
    for lineno, ev in events:
        report.events += 1
        if ev["ev"] == "reset":
            stopped = False
        r_old = old.apply(ev)
        if "error" in r_old:
            raise TraceError(path, lineno, f"event not applicable: {r_old['error']}")
        r_new = new.apply(ev)
        if r_old != r_new and report.divergence is None and not stopped:
            report.divergence = Divergence(report.events, lineno, ev, r_old, r_new)
            if stop_at_first:
                break
        stopped = stopped or entry_failed(ev, r_old)
    report.translations = old.translations
    report.seconds = {"old": old.translate_time, "new": new.translate_time}
    return report


def jsonable(obj):
    """Results hold tuples; JSON wants lists."""
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj

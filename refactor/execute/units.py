"""Units of work: pure, picklable data that any worker process can run.

A unit names a task ("module:function", imported on the worker), its arguments
(plain data) and the context it needs there: the tool version it was cut by
and the user's `--rules` overlay, carried as file contents so a cluster worker
without the user's files applies the same rules.  A unit's result is plain
data too, returned with the unit id: results are keyed by id, so a unit run
twice (a lost worker's unit rerun) is counted once.
"""
from __future__ import annotations

import hashlib
import importlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from refactor import __version__


class ExecuteError(RuntimeError):
    """A unit cannot run here (version mismatch, unknown task, no cluster engine)."""


@dataclass(frozen=True)
class Context:
    """What every unit of a run needs on its worker besides its arguments."""

    version: str = __version__
    # The active --rules overlay: ((file name, contents), ...) and whether it was a directory.
    rules: tuple[tuple[str, bytes], ...] = ()
    rules_dir: bool = False

    @property
    def key(self) -> str:
        h = hashlib.sha256(self.version.encode())
        h.update(b"dir" if self.rules_dir else b"file")
        for name, data in self.rules:
            h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
        return h.hexdigest()[:16]


@dataclass(frozen=True)
class Unit:
    id: str                 # unique within a run; results are keyed by it
    task: str               # "package.module:function", called as function(**args)
    args: dict = field(default_factory=dict)
    context: Context = field(default_factory=Context)


def current_context() -> Context:
    """The context of this process: its version and active --rules overlay."""
    from refactor.rules_overlay import overlay_files

    files = [Path(f) for f in overlay_files()]
    rules = tuple((f.name, f.read_bytes()) for f in files)
    return Context(__version__, rules, len(files) > 1)


_ACTIVE_KEY: list[str] = [Context().key]    # the context this worker process has applied
_OVERLAY_DIRS: list[tempfile.TemporaryDirectory] = []


def enter(ctx: Context) -> None:
    """Apply a unit's context in this (worker) process; cached by its key."""
    if ctx.version != __version__:
        raise ExecuteError(f"this worker runs kvm-refactor {__version__}, the unit was cut by "
                           f"{ctx.version}: install the same version on every worker")
    if _ACTIVE_KEY[0] == ctx.key:
        return
    from refactor.rules_overlay import activate

    if not ctx.rules:
        activate(None)
    else:
        # The overlay is written out under its own names: the loader reads it as the
        # user's process did (a directory of NAME.toml, or one file).
        tmp = tempfile.TemporaryDirectory(prefix="kvm-refactor-rules-")
        _OVERLAY_DIRS.append(tmp)
        for name, data in ctx.rules:
            (Path(tmp.name) / name).write_bytes(data)
        activate(tmp.name if ctx.rules_dir else Path(tmp.name) / ctx.rules[0][0])
    _ACTIVE_KEY[0] = ctx.key


def execute(unit: Unit) -> tuple[str, object]:
    """Run one unit here: (unit id, its result)."""
    enter(unit.context)
    module, _, name = unit.task.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ExecuteError(f"unit {unit.id}: no task {unit.task} ({exc})") from None
    return unit.id, fn(**unit.args)

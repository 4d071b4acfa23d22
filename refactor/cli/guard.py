"""The one place where exceptions become exit codes (see README, "Exit codes").

Every command runs under `GuardedGroup.invoke`, so a command module added
later is covered without doing anything:

  0 ok, 1 findings / divergence / conflicts (the commands say so themselves),
  2 bad input (one line naming what and why), 3 needs a human (the commands),
  4 internal error: one line, and the full traceback written to a file,
  130 interrupted (Ctrl-C).

Bad input is recognised by class: the library's errors (BAD_INPUT, or
anything with a `bad_input = True` class attribute), git refusing a
repository, and OSErrors on a named path (permissions, read-only file
systems, a full disk: the user's to fix, not ours).
"""
from __future__ import annotations

import datetime
import importlib
import os
import re
import sys
import tempfile
import traceback
from pathlib import Path

import click

EXIT_OK, EXIT_FINDINGS, EXIT_BAD_INPUT, EXIT_HUMAN, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130

# module:Class of the library's "your input is wrong" exceptions: refactor.errors's base class
# (every library error derives from it) and the emulator's trace errors.  Imported lazily and
# tolerantly: a module that cannot be imported is skipped rather than hiding the real error.
BAD_INPUT = ("refactor.errors:RefactorError", "emulator.trace:TraceError")
_MAX_MESSAGE = 400


def one_line(text: str, limit: int = _MAX_MESSAGE) -> str:
    """A message safe for one terminal line: control characters escaped, length bounded."""
    s = escape_controls(text)
    return s if len(s) <= limit else s[:limit - 3] + "..."


# C0 and C1 controls, DEL, and the surrogates that stand for undecodable bytes (surrogateescape).
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\udc80-\udcff]")


def _escape_one(m: re.Match) -> str:
    c = ord(m.group())
    if c == 9:
        return " "
    return f"\\x{c - 0xDC00 if c >= 0xDC80 else c:02x}"


def escape_controls(text: str) -> str:
    """Control characters (newline, ESC, ...) and undecodable bytes as \\xNN: one line, no terminal codes."""
    text = str(text)
    return _CONTROLS.sub(_escape_one, text) if _CONTROLS.search(text) else text


def _bad_input_classes() -> tuple[type, ...]:
    classes = []
    for spec in BAD_INPUT:
        mod, _, name = spec.partition(":")
        try:
            cls = getattr(importlib.import_module(mod), name, None)
        except Exception:  # noqa: BLE001 - a broken optional module must not hide the real error
            cls = None
        if isinstance(cls, type) and issubclass(cls, BaseException):
            classes.append(cls)
    return tuple(classes)


def _git_message(exc: BaseException) -> str | None:
    """git's own one-line reason (e.g. "detected dubious ownership"), or None if not a git error."""
    try:
        import git
    except ImportError:
        return None
    if isinstance(exc, git.GitCommandError):
        err = exc.stderr if isinstance(exc.stderr, str) else str(exc.stderr or "")
        # GitPython formats it as "\n  stderr: 'fatal: ...'": drop that wrapping.
        err = err.strip()
        if err.startswith("stderr: '") and err.endswith("'"):
            err = err[len("stderr: '"):-1]
        lines = [ln.strip() for ln in err.splitlines()]
        lines = [ln for ln in lines if ln] or [f"exit status {exc.status}"]
        fatal = [ln for ln in lines if ln.startswith(("fatal:", "error:"))]
        return f"git {exc.command[1] if len(exc.command) > 1 else ''}: {(fatal or lines)[0]}"
    if isinstance(exc, git.InvalidGitRepositoryError):
        return f"{exc}: not a git repository"
    if isinstance(exc, git.NoSuchPathError):
        return f"{exc}: no such file or directory"
    if isinstance(exc, (git.BadName, git.BadObject)):
        return f"git: {exc}"
    return None


def classify(exc: BaseException) -> tuple[int, str]:
    """(exit code, one-line message) for an exception no command handled."""
    if getattr(exc, "bad_input", False) or isinstance(exc, _bad_input_classes()):
        return EXIT_BAD_INPUT, str(exc)
    git_msg = _git_message(exc)
    if git_msg is not None:
        return EXIT_BAD_INPUT, git_msg
    if isinstance(exc, RecursionError):
        # The syntax-tree walks recurse; source.MAX_NESTING bounds brackets, ?: and #if, but a
        # chain of thousands of `if (x)`, casts or unary operators nests just as deep.
        return EXIT_BAD_INPUT, ("input nested too deeply to analyse (thousands of chained if statements, "
                                "casts or operators?): the Python recursion limit was reached")
    if isinstance(exc, UnicodeError):
        # Library code reads text as UTF-8 with replacement; one that did not is ours to fix.
        return EXIT_INTERNAL, f"{type(exc).__name__}: {exc}"
    if isinstance(exc, OSError) and exc.filename is not None:
        target = exc.filename if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}"
        return EXIT_BAD_INPUT, f"{target}: {exc.strerror or type(exc).__name__}"
    return EXIT_INTERNAL, f"{type(exc).__name__}: {exc}"


def crash_dir() -> Path:
    base = os.environ.get("KVM_REFACTOR_CACHE")
    root = Path(base) if base else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kvm-refactor"
    return root / "crashes"


def write_traceback(exc: BaseException) -> Path | None:
    """The full traceback in a file of its own; None if nowhere is writable."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    text = (f"kvm-refactor internal error, {stamp}\nargv: {sys.argv!r}\n\n"
            + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    for directory in (crash_dir(), Path(tempfile.gettempdir())):
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd, path = tempfile.mkstemp(dir=directory, prefix=f"kvm-refactor-crash-{stamp}-", suffix=".txt")
            with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as fh:
                fh.write(text)
            return Path(path)
        except OSError:
            continue
    return None


class GuardedGroup(click.Group):
    """A click group whose commands cannot let a Python exception reach the user."""

    def invoke(self, ctx: click.Context):
        for stream in (sys.stdout, sys.stderr):
            # A name the terminal's encoding cannot show is escaped, never an exception.
            try:
                stream.reconfigure(errors="backslashreplace")
            except (AttributeError, ValueError, OSError):
                pass
        try:
            return super().invoke(ctx)
        except click.UsageError:
            raise  # click's own usage text (exit 2)
        except click.ClickException as exc:
            # Our input errors: keep their class and code, make the message one safe line.
            exc.message = one_line(exc.message)
            raise
        except (click.exceptions.Exit, click.exceptions.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            click.echo("\nkvm-refactor: interrupted", err=True)
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
        except BrokenPipeError:
            # The reader went away (`| head`): nothing more to say, and nowhere to say it.
            try:
                sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps interpreter shutdown quiet
            except OSError:
                pass
            raise click.exceptions.Exit(EXIT_OK) from None
        except Exception as exc:  # noqa: BLE001 - this is the one place that catches everything
            if os.environ.get("KVM_REFACTOR_DEBUG"):
                raise
            code, message = classify(exc)
            if code == EXIT_BAD_INPUT and isinstance(exc, RecursionError):
                where = write_traceback(exc)  # in case it was a bug after all
                click.echo(f"kvm-refactor: error: {one_line(message)} (traceback in {where})", err=True)
            elif code == EXIT_BAD_INPUT:
                click.echo(f"kvm-refactor: error: {one_line(message)}", err=True)
            else:
                where = write_traceback(exc)
                tail = f"traceback in {where}" if where else "no traceback file could be written"
                click.echo(f"kvm-refactor: internal error: {one_line(message, 200)} ({tail}); "
                           "please report it", err=True)
            raise click.exceptions.Exit(code) from None

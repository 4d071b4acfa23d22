"""Command-line layer (click): thin commands over the library API.

`main` is loaded on first use, so that a module under refactor.cli (an option
helper the emulator imports, say) can be imported without first importing
every command module, which would import that module's importer back.
"""
from __future__ import annotations

__all__ = ["main"]


def __getattr__(name: str):
    if name == "main":
        try:
            from refactor.cli.app import main
        except Exception as exc:  # noqa: BLE001 - a broken install still gets one line and exit 4
            return _broken(exc)
        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _broken(exc: Exception):
    def main(*args, **kwargs):
        import sys

        from refactor.cli.guard import EXIT_INTERNAL, one_line, write_traceback

        where = write_traceback(exc)
        print(f"kvm-refactor: internal error: cannot load the commands: {one_line(repr(exc), 200)} "
              f"(traceback in {where}); please report it", file=sys.stderr)
        sys.exit(EXIT_INTERNAL)

    return main

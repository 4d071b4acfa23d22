"""The errors the library raises, in one place.

Each is a one-line reason for the user (the CLI prints it after the program
name and exits with status 2).  They all derive from RefactorError, so a
library caller can catch everything the tool reports with one clause, and
each also keeps the builtin base it always had (ValueError, RuntimeError), so
existing `except ValueError` code is unaffected.  The modules that raised
them first re-export them (`from refactor.rules import RulesError` works).
"""
from __future__ import annotations


class RefactorError(Exception):
    """Anything kvm-refactor reports as a user-facing error."""


class RulesError(RefactorError, ValueError):
    """rules/ data or a names specification is malformed."""


class TreeError(RefactorError, ValueError):
    """The path is not a readable kernel tree."""


class PatchError(RefactorError, ValueError):
    """The input is not a patch (or a patch broken beyond reading)."""


class EditConflict(RefactorError, ValueError):
    """Two planned edits overlap and neither contains the other."""


class BuildError(RefactorError, RuntimeError):
    """The build could not be run at all (no Makefile, no compiler...)."""


class SeriesError(RefactorError, ValueError):
    """Something the user must fix first (dirty tree, no identity, branch exists...)."""


class VerifyError(RefactorError, ValueError):
    """verify cannot run: no engine for the tree, a stub reached, bad arguments."""


class FetchError(RefactorError):
    """Fetching a tree failed; str(error) is a one-line reason for the user."""

    def __init__(self, reason: str) -> None:
        super().__init__(" ".join(str(reason).split()))


__all__ = ["BuildError", "EditConflict", "FetchError", "PatchError", "RefactorError", "RulesError",
           "SeriesError", "TreeError"]

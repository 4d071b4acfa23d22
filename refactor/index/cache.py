"""Content-hash cache of indexes: a tree whose files did not change is not re-parsed."""
from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
from pathlib import Path

from refactor import __version__
from refactor.rules import Rules
from refactor.frontend.source import SourceFile


def cache_dir() -> Path:
    base = os.environ.get("KVM_REFACTOR_CACHE")
    root = Path(base) if base else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kvm-refactor"
    return root / "index"


def key_for(files: list[SourceFile], rules: Rules) -> str:
    h = hashlib.sha256(__version__.encode())
    # Code changes of the indexer invalidate too: hash our own sources.
    for path in sorted(Path(__file__).resolve().parent.parent.rglob("*.py")):
        h.update(path.read_bytes())
    for name in sorted(rules.raw):
        h.update(repr(rules.raw[name]).encode())
    from refactor.frontend.macros import tables

    h.update(tables().fingerprint.encode())  # the parser's macro file (rules/macros.toml)
    for sf in files:
        h.update(sf.rel.encode() + b"\0" + hashlib.sha1(sf.data).digest())
    return h.hexdigest()


def load(key: str):
    path = cache_dir() / f"{key}.pickle"
    try:
        with path.open("rb") as fh:
            return pickle.load(fh)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
        return None


def store(key: str, value) -> None:
    directory = cache_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(value, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, directory / f"{key}.pickle")
    except OSError:
        pass  # a cache that cannot be written only costs time

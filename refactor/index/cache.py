"""Content-hash cache of indexes and plans: a tree whose inputs did not change is not re-parsed.

Safe to share: entries are JSON data, never pickle.  Decoding builds only
dataclasses defined in the `refactor` package, from their declared fields;
nothing else in an entry can name code to run.  Each entry is an envelope
with the cache format version, the tool version, its own key and a SHA-256
of its payload; an entry that is corrupt, truncated, of another version,
filed under another key or owned by another user is ignored and rebuilt.

The key covers everything a result depends on: the tool version and its own
sources, the rules, the parser's macro tables, the tree's top Makefile (its
version) and every source file's path and contents.
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import importlib
import json
import os
import tempfile
from pathlib import Path, PurePath

from refactor import __version__
from refactor.frontend.source import SourceFile
from refactor.rules import Rules

FORMAT = "kvm-refactor-cache"
FORMAT_VERSION = 2  # 1 was pickle
MAX_ENTRY_BYTES = 512 * 1024 * 1024


def cache_dir() -> Path:
    base = os.environ.get("KVM_REFACTOR_CACHE")
    root = Path(base) if base else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kvm-refactor"
    return root / "index"


def _tree_root(files: list[SourceFile]) -> Path | None:
    for sf in files:
        depth = len(PurePath(sf.rel).parts)
        if depth and len(sf.path.parts) > depth:
            return sf.path.parents[depth - 1]
    return None


def key_for(files: list[SourceFile], rules: Rules) -> str:
    h = hashlib.sha256(f"{FORMAT} {FORMAT_VERSION} {__version__}\0".encode())
    # Code changes of the indexer invalidate too: hash our own sources.
    for path in sorted(Path(__file__).resolve().parent.parent.rglob("*.py")):
        h.update(path.read_bytes())
    for name in sorted(rules.raw):
        h.update(repr(rules.raw[name]).encode())
    try:
        from refactor.frontend.macros import tables

        h.update(tables().fingerprint.encode())  # the parser's macro file (rules/macros.toml)
    except (ImportError, AttributeError):
        pass
    root = _tree_root(files)
    makefile = b""
    if root is not None:
        try:
            with open(root / "Makefile", "rb") as fh:  # the tree's version comes from it
                makefile = fh.read(1024 * 1024)
        except OSError:
            pass
    h.update(b"Makefile\0" + hashlib.sha256(makefile).digest())
    for sf in files:
        h.update(sf.rel.encode("utf-8", "surrogateescape") + b"\0" + hashlib.sha256(sf.data).digest()
                 + (sf.problem or "").encode() + (b"T" if sf.type_only else b"F"))
    return h.hexdigest()


# ---- a JSON encoding of our dataclasses -----------------------------------------------------

class NotCacheable(TypeError):
    pass


def _encode(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, bytes):
        return {"__bytes__": base64.b64encode(value).decode("ascii")}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v) for v in value]}
    if isinstance(value, (set, frozenset)):
        return {"__set__": sorted((_encode(v) for v in value), key=repr),
                "frozen": isinstance(value, frozenset)}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, PurePath):
        return {"__path__": str(value)}
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: _encode(v) for k, v in value.items()}
        return {"__items__": [[_encode(k), _encode(v)] for k, v in value.items()]}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        cls = type(value)
        if not cls.__module__.startswith("refactor."):
            raise NotCacheable(f"{cls.__module__}.{cls.__qualname__}")
        return {"__dc__": f"{cls.__module__}:{cls.__qualname__}",
                "fields": {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}}
    raise NotCacheable(type(value).__name__)


def _dataclass(name: str) -> type:
    module, _, qual = name.partition(":")
    if not module.startswith("refactor.") or "." in qual or not qual.isidentifier():
        raise ValueError(f"class {name!r} is not ours")
    cls = getattr(importlib.import_module(module), qual, None)  # our own, already-imported modules
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise ValueError(f"{name!r} is not a dataclass")
    return cls


def _decode(value):
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "__bytes__" in value:
        return base64.b64decode(value["__bytes__"], validate=True)
    if "__tuple__" in value:
        return tuple(_decode(v) for v in value["__tuple__"])
    if "__set__" in value:
        items = [_decode(v) for v in value["__set__"]]
        return frozenset(items) if value.get("frozen") else set(items)
    if "__path__" in value:
        return Path(value["__path__"])
    if "__items__" in value:
        return {_decode(k): _decode(v) for k, v in value["__items__"]}
    if "__dc__" in value:
        cls = _dataclass(value["__dc__"])
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        fields = value["fields"]
        if set(fields) != names:
            raise ValueError(f"{value['__dc__']}: fields changed")
        return cls(**{k: _decode(v) for k, v in fields.items()})
    return {k: _decode(v) for k, v in value.items()}


def dumps(key: str, value) -> bytes:
    payload = json.dumps(_encode(value), separators=(",", ":"), ensure_ascii=True)
    envelope = {"format": FORMAT, "version": FORMAT_VERSION, "tool_version": __version__, "key": key,
                "sha256": hashlib.sha256(payload.encode()).hexdigest(), "payload": payload}
    return json.dumps(envelope).encode()


def loads(key: str, data: bytes):
    """The cached value, or None for anything that is not exactly our entry for `key`."""
    try:
        env = json.loads(data)
        if not (isinstance(env, dict) and env.get("format") == FORMAT and env.get("version") == FORMAT_VERSION
                and env.get("tool_version") == __version__ and env.get("key") == key):
            return None
        payload = env["payload"]
        if not isinstance(payload, str) or hashlib.sha256(payload.encode()).hexdigest() != env.get("sha256"):
            return None
        return _decode(json.loads(payload))
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError, ImportError, UnicodeError):
        return None


def _entry(key: str) -> Path:
    if not key.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"bad cache key {key!r}")
    return cache_dir() / f"{key}.json"


def load(key: str):
    path = _entry(key)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        # Another user's entry (a shared cache directory) is not trusted, nor is a huge one.
        if st.st_uid != os.geteuid() or st.st_size > MAX_ENTRY_BYTES or not _regular(st.st_mode):
            return None
        with os.fdopen(fd, "rb") as fh:
            fd = -1
            data = fh.read()
    except OSError:
        return None
    finally:
        if fd >= 0:
            os.close(fd)
    return loads(key, data)


def _regular(mode: int) -> bool:
    import stat

    return stat.S_ISREG(mode)


def store(key: str, value) -> None:
    try:
        data = dumps(key, value)
    except (NotCacheable, ValueError, RecursionError):
        return  # not cacheable: only costs time
    directory = cache_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, _entry(key))
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    except OSError:
        pass  # a cache that cannot be written only costs time

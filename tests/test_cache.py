"""The index/plan cache: JSON data with a version and a checksum, keyed by everything a result depends on."""
from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest

from refactor.frontend.source import discover
from refactor.index import cache
from refactor.index.indexer import build_index, scan_tree
from refactor.rules import load_rules

REPO = Path(__file__).resolve().parent.parent
MINI = REPO / "fixtures" / "mini-kvm"


@pytest.fixture
def tree(tmp_path, monkeypatch):
    monkeypatch.setenv("KVM_REFACTOR_CACHE", str(tmp_path / "cache"))
    dest = tmp_path / "tree"
    shutil.copytree(MINI, dest)
    return dest


def entry_of(tree: Path) -> tuple[str, Path]:
    key = cache.key_for(discover(tree), load_rules())
    return key, cache.cache_dir() / f"{key}.json"


def test_round_trip_is_exact(tree):
    from refactor.plan.rewrite import cached_plan

    fresh = build_index(tree)
    scan_tree(tree)  # fills the cache
    key, path = entry_of(tree)
    assert path.exists() and not list(path.parent.glob("*.pickle"))
    warm = cache.load(key)
    assert warm is not None and warm.to_json() == fresh.to_json()
    assert warm.program.structs.members == fresh.program.structs.members
    assert warm.program.functions == fresh.program.functions
    first = cached_plan(tree)
    second = cached_plan(tree)  # from the cache
    assert second.to_json() == first.to_json() and second.diff() == first.diff()


def test_never_pickle_and_never_code(tree):
    scan_tree(tree)
    key, path = entry_of(tree)
    marker = tree / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path.write_bytes(pickle.dumps(Evil()))
    assert cache.load(key) is None and not marker.exists()
    # A well-formed envelope whose payload names something that is not one of our dataclasses.
    for name in ("os:system", "subprocess:Popen", "refactor.index.indexer:Tracker", "builtins:eval"):
        payload = json.dumps({"__dc__": name, "fields": {"args": f"touch {marker}"}})
        doc = json.loads(cache.dumps(key, 1))
        doc.update(payload=payload, sha256=__import__("hashlib").sha256(payload.encode()).hexdigest())
        path.write_text(json.dumps(doc))
        assert cache.load(key) is None and not marker.exists(), name


def test_corrupt_and_foreign_entries_are_rebuilt(tree):
    fresh = scan_tree(tree).to_json()
    key, path = entry_of(tree)
    good = path.read_bytes()
    doc = json.loads(good)
    # The same length, one character of the payload changed: the checksum sees it.
    i = doc["payload"].index('"walk_mmu"')
    doc["payload"] = doc["payload"][:i + 1] + "W" + doc["payload"][i + 2:]
    edited = json.dumps(doc).encode()
    assert len(edited) == len(good)
    cases = {
        "same-length edit": edited,
        "truncated": good[: len(good) // 2],
        "not JSON": b"\x00\xff garbage",
        "deeply nested": b"[" * 100000 + b"]" * 100000,
        "other format version": json.dumps(dict(json.loads(good), version=1)).encode(),
        "other tool version": json.dumps(dict(json.loads(good), tool_version="0.0.0")).encode(),
        "filed under another key": json.dumps(dict(json.loads(good), key="0" * 64)).encode(),
    }
    for what, data in cases.items():
        path.write_bytes(data)
        assert cache.load(key) is None, what
        assert scan_tree(tree).to_json() == fresh, what  # rebuilt...
        assert cache.load(key) is not None, what  # ...and stored again


def test_entry_of_another_user_is_ignored(tree):
    if os.geteuid() != 0:
        pytest.skip("needs root to give the entry to another user")
    scan_tree(tree)
    key, path = entry_of(tree)
    os.chown(path, 65534, 65534)
    assert cache.load(key) is None


def test_key_covers_every_input(tree, monkeypatch):
    rules = load_rules()
    base = cache.key_for(discover(tree), rules)
    assert cache.key_for(discover(tree), rules) == base
    mk = tree / "Makefile"
    text = mk.read_text()
    mk.write_text(text.replace("PATCHLEVEL = ", "PATCHLEVEL = 9", 1) if "PATCHLEVEL = " in text else text + "\n#x\n")
    assert cache.key_for(discover(tree), rules) != base, "top Makefile (the version) not in the key"
    mk.write_text(text)
    src = tree / "arch/x86/kvm/x86.c"
    data = src.read_bytes()
    src.write_bytes(data.replace(b"walk_mmu", b"walk_mmX", 1))  # same length
    assert cache.key_for(discover(tree), rules) != base, "file contents not in the key"
    src.write_bytes(data)
    assert cache.key_for(discover(tree), rules) == base
    other = load_rules()
    other.raw[sorted(other.raw)[0]] = {"changed": True}
    assert cache.key_for(discover(tree), other) != base, "rules not in the key"
    monkeypatch.setattr(cache, "__version__", "99.0")
    assert cache.key_for(discover(tree), rules) != base, "tool version not in the key"

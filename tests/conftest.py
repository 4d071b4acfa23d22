"""Shared fixtures: the real kernel trees and the bundled miniature tree.

Real trees come from $KVM_REFACTOR_TREES (default ../shared/kernel beside the
repository): the linux-kvm-V.tar.xz tarballs, unpacked once into a cache.
Without them the tests that need them fail and say how to provide them;
they never skip silently.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURE_TREE = REPO / "fixtures" / "mini-kvm"


@pytest.fixture(scope="session", autouse=True)
def _private_index_cache(tmp_path_factory):
    # The content-hash cache must not leak between test runs and users.
    old = os.environ.get("KVM_REFACTOR_CACHE")
    cache = tmp_path_factory.mktemp("cache")
    os.environ["KVM_REFACTOR_CACHE"] = str(cache)
    yield
    if old is None:
        os.environ.pop("KVM_REFACTOR_CACHE", None)
    else:
        os.environ["KVM_REFACTOR_CACHE"] = old
    # Gone even when a test failed (pytest keeps a failed session's temp dirs): the
    # farms and Kbuild outputs here (84,000 symlinks a full tree) would otherwise be
    # deleted by a later run, at a minute a farm; failing tests' own tmp_path dirs stay.
    shutil.rmtree(cache, ignore_errors=True)


@pytest.fixture(scope="session")
def trees() -> dict[str, Path]:
    from refactor.kernel.fetch import FetchError, bundled_tarball_trees, default_tarball_dir

    src = default_tarball_dir()
    cache = Path(os.environ.get("KVM_REFACTOR_TREE_CACHE",
                                Path.home() / ".cache" / "kvm-refactor" / "tarball-trees"))
    try:
        found = bundled_tarball_trees(src, cache)
    except FetchError as exc:
        found, why = {}, str(exc)
    else:
        why = "no linux-kvm-V.tar.xz tarballs there"
    missing = {"6.1", "7.2", "7.3"} - set(found)
    if missing:
        pytest.fail(
            f"real kernel trees {sorted(missing)} not available from {src} ({why}). "
            "Set KVM_REFACTOR_TREES to a directory holding linux-kvm-6.1.tar.xz, "
            "linux-kvm-7.2.tar.xz and linux-kvm-7.3.tar.xz, or fetch trees with "
            "`kvm-refactor fetch-tree VERSION`.",
            pytrace=False,
        )
    return found


@pytest.fixture(scope="session")
def indexes(trees):
    from refactor.index.indexer import build_index

    return {v: build_index(p) for v, p in trees.items()}


@pytest.fixture(scope="session")
def mini_index():
    from refactor.index.indexer import build_index

    return build_index(FIXTURE_TREE)


@pytest.fixture(scope="module")
def engine_61():
    """The native engine of the full 6.1 tree, from the persistent cache (the session's
    own cache is empty, where the engine would be built cold: minutes, not seconds)."""
    from emulator.native import build_engine
    from test_build import full_tree

    old = os.environ.get("KVM_REFACTOR_CACHE")
    os.environ["KVM_REFACTOR_CACHE"] = str(Path.home() / ".cache" / "kvm-refactor")
    try:
        return build_engine(full_tree("6.1"))
    finally:
        if old is None:
            os.environ.pop("KVM_REFACTOR_CACHE", None)
        else:
            os.environ["KVM_REFACTOR_CACHE"] = old


@pytest.fixture(scope="module")
def rules():
    from refactor.rules import load_rules

    return load_rules()


@pytest.fixture(scope="module")
def targets(trees, rules):
    """Each real tree as a `port` target."""
    from refactor.port.target import load_target

    return {v: load_target(p, rules) for v, p in trees.items()}


FULL_510 = Path.home() / ".cache" / "kvm-refactor" / "trees" / "linux-source-5.10-full"


@pytest.fixture(scope="module")
def t510(rules):
    """The full 5.10 tree as a `port` target; the tests that need it skip without it."""
    from refactor.port.target import load_target

    if not (FULL_510 / "arch/x86/kvm/x86.c").is_file():
        pytest.skip("no full 5.10 tree: `kvm-refactor fetch-tree 5.10 --full` adds it")
    return load_target(FULL_510, rules)

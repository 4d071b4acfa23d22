"""Trees older than the bundled tarballs: 5.10 LTS (Debian bullseye's linux-source-5.10).

Found, in order: $KVM_REFACTOR_TREES/linux-kvm-5.10.tar.xz (the same form as
the other test trees), then a tree `kvm-refactor fetch-tree 5.10` already
fetched (KVM subset or full), then a fetch of the KVM subset.  Nothing of it
is committed.  When none works the test fails and says how to provide it.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

TREES = Path.home() / ".cache" / "kvm-refactor" / "trees"


def old_tree(version: str = "5.10", full: bool = False) -> Path:
    from refactor.kernel.fetch import FetchError, bundled_tarball_trees, default_tarball_dir, fetch_tree

    env = os.environ.get("KVM_REFACTOR_FULL_TREE_" + version.replace(".", "_"))
    if env:
        return Path(env)
    if not full:
        cache = Path(os.environ.get("KVM_REFACTOR_TREE_CACHE", Path.home() / ".cache" / "kvm-refactor"
                                    / "tarball-trees"))
        try:
            found = bundled_tarball_trees(default_tarball_dir(), cache)
        except FetchError:
            found = {}
        if version in found:
            return found[version]
        for name in (f"linux-source-{version}", f"linux-source-{version}-full"):
            if (TREES / name / ".kvm-refactor-fetch.json").is_file():
                return TREES / name
    try:
        return fetch_tree(version, full=full, dest=TREES).path
    except FetchError as exc:
        pytest.fail(f"no {version} tree: {exc}. Put linux-kvm-{version}.tar.xz in $KVM_REFACTOR_TREES, "
                    f"set KVM_REFACTOR_FULL_TREE_{version.replace('.', '_')}, or make "
                    f"`kvm-refactor fetch-tree {version}{' --full' if full else ''}` work.", pytrace=False)

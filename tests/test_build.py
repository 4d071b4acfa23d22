"""The compile oracle: Kbuild builds the rewritten KVM of a real, full tree.

One full-tree build (6.1, which Debian keeps for years) runs with the normal
suite; the other trees and name presets are in the slow suite (`make slow`).
Full trees come from `kvm-refactor fetch-tree VERSION --full` (cached), or
from $KVM_REFACTOR_FULL_TREE_<V> (e.g. KVM_REFACTOR_FULL_TREE_6_1).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from refactor.kernel.build import Diagnostic, check_tree, map_errors, new_line_sites
from refactor.index.indexer import build_index
from refactor.plan.rewrite import plan_rewrite

from conftest import FIXTURE_TREE


def full_tree(version: str) -> Path:
    env = os.environ.get("KVM_REFACTOR_FULL_TREE_" + version.replace(".", "_"))
    if env:
        return Path(env)
    from refactor.kernel.fetch import FetchError, fetch_tree

    try:
        # A persistent cache (not the per-run one conftest sets): full trees are large.
        return fetch_tree(version, full=True, dest=Path.home() / ".cache" / "kvm-refactor" / "trees").path
    except FetchError as exc:
        pytest.fail(f"no full {version} tree: {exc}. Set KVM_REFACTOR_FULL_TREE_{version.replace('.', '_')} "
                    f"to a full kernel tree, or make `kvm-refactor fetch-tree {version} --full` work.",
                    pytrace=False)


@pytest.fixture(autouse=True)
def _persistent_build_dir(monkeypatch):
    # Kbuild output is kept between runs so that rebuilds are incremental.
    monkeypatch.setenv("KVM_REFACTOR_CACHE", str(Path.home() / ".cache" / "kvm-refactor"))


def rewrite_builds(version: str, names: str) -> None:
    tree = full_tree(version)
    plan = plan_rewrite(tree, names, index=build_index(tree))
    assert plan.humans == []
    result = check_tree(tree, plan)
    assert result.ok, "\n".join(f"{e.file}:{e.line}: {e.message} <- {e.site}" for e in result.errors[:10]) \
        or result.log_tail
    assert result.errors == []


def test_rewritten_61_builds_with_kbuild():
    rewrite_builds("6.1", "upstream")


@pytest.mark.slow
@pytest.mark.parametrize("version,names", [("7.2", "upstream"), ("7.2", "v1"), ("6.1", "v1")])
def test_rewritten_trees_build(version, names):
    rewrite_builds(version, names)


@pytest.mark.slow
def test_a_wrong_rule_is_caught_and_mapped_to_its_site(tmp_path):
    """A rule sending permissions to a path that does not exist: the build fails at that site."""
    import shutil

    from refactor.rules import load_rules

    rules_dir = tmp_path / "rules"
    shutil.copytree(Path(__file__).resolve().parent.parent / "rules", rules_dir)
    layout = rules_dir / "layout.toml"
    layout.write_text(layout.read_text().replace('path = "fmt.permissions"', 'path = "fmt.perms"'))
    tree = full_tree("6.1")
    rules = load_rules(rules_dir)
    plan = plan_rewrite(tree, "upstream", rules, build_index(tree, rules))
    result = check_tree(tree, plan)
    assert not result.ok
    assert any(e.site and "permissions" in e.site["rule"] for e in result.errors), \
        [(e.file, e.line, e.site) for e in result.errors[:5]]


def test_errors_map_to_the_nearest_rewrite_site_above():
    plan = plan_rewrite(FIXTURE_TREE, "upstream")
    sites = new_line_sites(plan)["arch/x86/kvm/x86.c"]
    first = sites[0]
    errs = [Diagnostic("arch/x86/kvm/x86.c", first["new_line"], 5, "boom"),
            Diagnostic("arch/x86/kvm/nosuch.c", 3, 1, "elsewhere")]
    map_errors(errs, plan)
    assert errs[0].site == first
    assert errs[1].site is None


def _unclean_farm(tmp_path: Path) -> Path:
    """A tree configured in place: the full 6.1 tree's top level linked, plus a .config."""
    tree = full_tree("6.1")
    farm_dir = tmp_path / "unclean"
    farm_dir.mkdir()
    for entry in tree.iterdir():
        if entry.name not in (".git", ".config"):
            (farm_dir / entry.name).symlink_to(entry)
    (farm_dir / ".config").write_text("CONFIG_64BIT=y\n")
    return farm_dir


def test_kbuild_refusing_an_unclean_tree_is_one_line_with_the_fix(tmp_path):
    """Kbuild's own words (its check run for real), then our check before any work."""
    from refactor.kernel.build import BuildError, build_kvm, configure

    farm_dir = _unclean_farm(tmp_path)
    with pytest.raises(BuildError) as exc:
        configure(farm_dir, tmp_path / "out")  # Kbuild runs and refuses
    assert "make mrproper" in str(exc.value) and "\n" not in str(exc.value)
    assert not (tmp_path / "out" / ".config").exists()  # not left half-configured
    with pytest.raises(BuildError, match="please run make mrproper"):
        build_kvm(farm_dir, tmp_path / "out2")


def test_build_check_cli_on_an_unclean_tree(tmp_path):
    import subprocess
    import sys

    farm_dir = _unclean_farm(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "refactor", "build-check", str(farm_dir)], capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "make mrproper" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_kbuild_reasons_name_the_missing_tool():
    from refactor.kernel.build import kbuild_reason

    # Lines as make and Kbuild print them when a tool is missing (Debian, dash).
    assert "apt-get install flex" in kbuild_reason("/bin/sh: 1: flex: not found\nmake[2]: *** Error 127", Path("."))
    assert "apt-get install bison" in kbuild_reason("/bin/sh: 1: bison: not found", Path("."))
    assert "libelf-dev" in kbuild_reason("error: Cannot generate ORC metadata for CONFIG_UNWINDER_ORC=y, "
                                         "please install libelf-dev, libelf-devel or elfutils-libelf-devel",
                                         Path("."))


@pytest.mark.slow
def test_rewritten_61_builds_with_kvm_as_modules():
    tree = full_tree("6.1")
    plan = plan_rewrite(tree, "upstream", index=build_index(tree))
    result = check_tree(tree, plan, config="modules")
    assert result.ok, result.reason or result.log_tail
    config = (Path(result.command.split("O=")[1].split()[0]) / ".config").read_text()
    assert "CONFIG_KVM=m" in config and "CONFIG_KVM_INTEL=m" in config and "CONFIG_KVM_AMD=m" in config

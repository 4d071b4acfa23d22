"""build-check and `make test` say which system packages are missing, in one line, before building."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from refactor.kernel import preflight

REPO = Path(__file__).resolve().parent.parent


def _path_without(tmp_path: Path, *hidden: str) -> str:
    """A PATH holding every command of the current PATH except `hidden`."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for d in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            if name not in hidden and not (bin_ / name).exists():
                (bin_ / name).symlink_to(os.path.join(d, name))
    return str(bin_)


def test_build_check_names_missing_flex_in_one_line(tmp_path):
    tree = tmp_path / "linux"
    (tree / "scripts").mkdir(parents=True)
    (tree / "Makefile").write_text("all:\n")
    env = dict(os.environ, PATH=_path_without(tmp_path, "flex", "bison"),
               KVM_REFACTOR_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, "-m", "refactor", "build-check", str(tree)], cwd=REPO, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "flex, bison" in lines[0] and "apt-get install -y flex bison" in lines[0], lines
    assert "Error 2" not in proc.stderr


def test_missing_libelf_and_bc_are_named(monkeypatch):
    monkeypatch.setattr(preflight, "_has_header", lambda h: h != "libelf.h")
    real = preflight.shutil.which
    monkeypatch.setattr(preflight.shutil, "which", lambda c: None if c == "bc" else real(c))
    line = preflight.check_build()
    assert line is not None and "bc, libelf" in line and line.endswith("bc libelf-dev")


def test_nothing_missing_here():
    # This machine has the build tools (the build tests need them): the check must not invent any.
    assert preflight.check_build() is None


def test_make_step_stops_with_one_line_when_it_cannot_install(tmp_path):
    # Not root (or no apt-get): the Makefile's step prints the packages and the command, exit 1.
    env = dict(os.environ, PATH=_path_without(tmp_path, "flex", "apt-get"))
    proc = subprocess.run([sys.executable, "-m", "refactor.kernel.preflight", "--install"], cwd=REPO, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "kvm-refactor: missing flex for the tests; install with: "
        f"{'' if os.geteuid() == 0 else 'sudo '}apt-get install -y flex"]

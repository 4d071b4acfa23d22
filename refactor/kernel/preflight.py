"""What a Kbuild build of arch/x86/kvm needs from the system, checked before building.

Kbuild without flex or bison fails deep inside `make defconfig`
(`[Makefile:250: __sub-make] Error 2`); without libelf's headers, objtool
fails later.  This says which are missing in one line, with the Debian
packages and the command that installs them.  Standard library only: the
Makefile runs it (`python3 -m refactor.kernel.preflight --install`) before
the venv exists.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Requirement:
    what: str  # as the user knows it
    package: str  # the Debian package that provides it
    command: str | None = None  # present when this is on PATH...
    header: str | None = None  # ...or when gcc finds this header
    module: str | None = None  # ...or when this Python can import this module


# The kernel build (tests/test_build.py, build-check) and what the tests run besides.
BUILD = (
    Requirement("make", "make", command="make"),
    Requirement("gcc", "gcc", command="gcc"),
    Requirement("flex", "flex", command="flex"),
    Requirement("bison", "bison", command="bison"),
    Requirement("bc", "bc", command="bc"),
    Requirement("libelf", "libelf-dev", header="libelf.h"),
    Requirement("openssl headers", "libssl-dev", header="openssl/opensslv.h"),
)
TESTS = BUILD + (
    Requirement("xz", "xz-utils", command="xz"),
    Requirement("patch", "patch", command="patch"),
    Requirement("git", "git", command="git"),
    # `python3 -m venv` (make's first step) needs ensurepip, which Debian splits off.
    Requirement("python3 venv", "python3-venv", module="ensurepip"),
    # Not needed to build, but the series' per-step Kbuild test compiles the same step states
    # on every run: with ccache (refactor/kernel/build.py) a rerun takes them from its cache.
    Requirement("ccache", "ccache", command="ccache"),
)


def _has_header(header: str) -> bool:
    gcc = shutil.which("gcc")
    if gcc is None:
        return False
    proc = subprocess.run([gcc, "-E", "-x", "c", "-o", os.devnull, "-"], input=f"#include <{header}>\n",
                          capture_output=True, text=True)
    return proc.returncode == 0


def missing(requirements=BUILD) -> list[Requirement]:
    return [r for r in requirements
            if (r.command and shutil.which(r.command) is None) or (r.header and not _has_header(r.header))
            or (r.module and importlib.util.find_spec(r.module) is None)]


def install_command(reqs: list[Requirement]) -> str:
    sudo = "" if os.geteuid() == 0 else "sudo "
    return f"{sudo}apt-get install -y {' '.join(dict.fromkeys(r.package for r in reqs))}"


def message(reqs: list[Requirement]) -> str:
    """One line: what is missing and how to install it."""
    return (f"missing {', '.join(r.what for r in reqs)} for the kernel build; "
            f"install with: {install_command(reqs)}")


def check_build() -> str | None:
    """None when Kbuild can run here, else the one-line reason."""
    reqs = missing(BUILD)
    return message(reqs) if reqs else None


def can_install() -> bool:
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def install(reqs: list[Requirement]) -> bool:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    packages = list(dict.fromkeys(r.package for r in reqs))
    if subprocess.run(["apt-get", "update", "-qq"], env=env).returncode != 0:
        return False
    return subprocess.run(["apt-get", "install", "-y", "-qq", *packages], env=env).returncode == 0


def main(argv: list[str] | None = None) -> int:
    """`python3 -m refactor.kernel.preflight [--install]`: 0 when everything the tests need is here.

    With --install, missing packages are installed when running as root with
    apt-get; otherwise one line names them and the command, and the exit is 1.
    """
    argv = sys.argv[1:] if argv is None else argv
    reqs = missing(TESTS)
    if not reqs:
        return 0
    if "--install" in argv and can_install():
        print(f"installing {' '.join(r.package for r in reqs)} (apt-get)", file=sys.stderr)
        if install(reqs) and not missing(TESTS):
            return 0
    line = message(missing(TESTS) or reqs).replace("for the kernel build", "for the tests")
    print(f"kvm-refactor: {line}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())

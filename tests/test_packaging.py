"""kvm-refactor as users install it: sdist -> wheel -> a fresh venv outside the checkout,
and the pre-commit hook exactly as .pre-commit-hooks.yaml ships it.

These build and install for real (pip, with PyPI or the local pip cache and
find-links of pip.conf for the dependencies), so they take a while; see the
timings in docs/lint.md.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["KVM_REFACTOR_CACHE"] = str(tmp / "index-cache")
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(cmd, cwd, env, ok=(0,), **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, **kw)
    assert proc.returncode in ok, f"{cmd} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _copy_checkout(dest: Path) -> Path:
    """The files of the checkout (tracked and new, not ignored): what a clone would hold."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file() and not rel.startswith(("kvm_refactor.egg-info/", "build/", "dist/")):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv bin dir, dist dir, env): the wheel built from the sdist, installed in a fresh venv."""
    tmp = tmp_path_factory.mktemp("pkg")
    env = _env(tmp)
    src = _copy_checkout(tmp / "src")
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], tmp, env)
    bin_ = venv / "bin"
    # `build` makes the sdist, then the wheel from the sdist: both must carry rules/.
    # (--no-isolation: the venv's own setuptools builds, rather than two fresh build envs.)
    _run([bin_ / "pip", "install", "-q", "build", "setuptools>=68"], tmp, env)
    _run([bin_ / "python", "-m", "build", "--no-isolation", "-o", str(tmp / "dist"), str(src)], tmp, env)
    wheel = next((tmp / "dist").glob("*.whl"))
    _run([bin_ / "pip", "install", "-q", str(wheel)], tmp, env)
    work = tmp / "work"  # outside the checkout: nothing can be found through the cwd
    work.mkdir()
    shutil.copytree(REPO / "fixtures" / "mini-kvm", work / "mini-kvm")
    return bin_, tmp / "dist", env, work, src


def test_wheel_and_sdist_hold_the_package_rules_and_corpus(installed):
    _, dist, _, _, src = installed
    wheel = zipfile.ZipFile(next(dist.glob("*.whl")))
    names = set(wheel.namelist())
    want_py = {p.relative_to(src).as_posix() for d in ("refactor", "emulator") for p in (src / d).rglob("*.py")}
    assert want_py - names == set(), "modules missing from the wheel (setup.py's package list)"
    rules = {p.name for p in (REPO / "rules").glob("*.toml")}
    assert {f"refactor/rules_data/{n}" for n in rules} <= names
    corpus = {p.name for p in (REPO / "emulator" / "corpus").glob("*.jsonl")}
    assert corpus and {f"emulator/corpus/{n}" for n in corpus} <= names
    sdist = tarfile.open(next(dist.glob("*.tar.gz")))
    in_sdist = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    assert {f"rules/{n}" for n in rules} <= in_sdist  # rules/ stays at the top of the source layout
    assert {f"emulator/corpus/{n}" for n in corpus} <= in_sdist


def test_installed_package_reads_its_own_rules(installed):
    bin_, _, env, work, _ = installed
    out = _run([bin_ / "python", "-c", "import refactor.rules as r, emulator.mutants as m; "
                "print(r.RULES_DIR); print(m.CORPUS)"], work, env).stdout.split()
    site = str(bin_.parent)
    assert out[0].startswith(site) and out[0].endswith("refactor/rules_data"), out
    assert out[1].startswith(site), out


def test_installed_commands_run_outside_the_checkout(installed):
    bin_, _, env, work, _ = installed
    exe = str(bin_ / "kvm-refactor")
    scan = _run([exe, "scan", "mini-kvm"], work, env)
    assert "layout: old" in scan.stdout
    rewrite = _run([exe, "rewrite", "mini-kvm"], work, env)
    assert "+" in rewrite.stdout and "gva_walk" in rewrite.stdout
    # Old-layout tree: every site the move changes is a finding (exit 1), none is a crash (2).
    lint = _run([exe, "lint", "mini-kvm"], work, env, ok=(1,))
    assert "[KVM001]" in lint.stdout
    patch = "\n".join(l for l in rewrite.stdout.splitlines() if not l.startswith("kvm-refactor")) + "\n"
    (work / "move.patch").write_text(patch)
    lint_patch = _run([exe, "lint", "move.patch"], work, env, ok=(0, 1))
    assert "not a patch" not in lint_patch.stderr
    _run([exe, "emulate", "mutants"], work, env)


# ---- pre-commit, as shipped -------------------------------------------------

KVM_HOST_H = """\
/* SPDX-License-Identifier: GPL-2.0-only */
#ifndef _ASM_X86_KVM_HOST_H
#define _ASM_X86_KVM_HOST_H

struct kvm_vcpu;
struct x86_exception;

struct kvm_pagewalk {
	unsigned long (*get_guest_pgd)(struct kvm_vcpu *vcpu);
	gpa_t (*gva_to_gpa)(struct kvm_vcpu *vcpu, struct kvm_pagewalk *w,
			    gpa_t gva_or_gpa, u64 access,
			    struct x86_exception *exception);
};

struct kvm_mmu {
	struct kvm_pagewalk *w;
	hpa_t root;
};

struct kvm_vcpu_arch {
	struct kvm_mmu *mmu;
	struct kvm_mmu root_mmu;
	struct kvm_mmu guest_mmu;
	struct kvm_pagewalk ngpa_walk;
	struct kvm_pagewalk gva_walk;
};

#endif
"""

X86_C = """\
// SPDX-License-Identifier: GPL-2.0-only
#include <asm/kvm_host.h>

gpa_t kvm_gva_to_gpa_read(struct kvm_vcpu *vcpu, gva_t gva,
			  struct x86_exception *exception)
{
	struct kvm_pagewalk *w = &vcpu->arch.gva_walk;

	return w->gva_to_gpa(vcpu, w, gva, 0, exception);
}
"""

BAD = """
gpa_t kvm_gva_to_gpa_nested(struct kvm_vcpu *vcpu, gva_t gva,
			    struct x86_exception *exception)
{
	return vcpu->arch.walk_mmu->gva_to_gpa(vcpu, vcpu->arch.walk_mmu, gva, 0, exception);
}
"""

GOOD = """
gpa_t kvm_gva_to_gpa_system(struct kvm_vcpu *vcpu, gva_t gva,
			    struct x86_exception *exception)
{
	struct kvm_pagewalk *w = &vcpu->arch.gva_walk;

	return w->gva_to_gpa(vcpu, w, gva, 0, exception);
}
"""


def _git(repo: Path, env, *args, ok=(0,)):
    return _run(["git", "-c", "user.name=T", "-c", "user.email=t@example.org", "-c", "commit.gpgsign=false",
                 *args], repo, env, ok=ok)


def test_pre_commit_hook_as_shipped(tmp_path):
    pre_commit = Path(sys.executable).with_name("pre-commit")
    if not pre_commit.exists():
        pytest.fail("pre-commit is not installed in this venv: `pip install -e '.[test]'` (make test does it)",
                    pytrace=False)
    env = _env(tmp_path)
    env["PRE_COMMIT_HOME"] = str(tmp_path / "pre-commit-home")
    # The hook repository as a user would pin it: this checkout's files at one commit.
    shipped = _copy_checkout(tmp_path / "shipped")
    _git(shipped, env, "init", "-q", ".")
    _git(shipped, env, "add", "-A")
    _git(shipped, env, "commit", "-q", "-m", "release")
    rev = _git(shipped, env, "rev-parse", "HEAD").stdout.strip()

    kernel = tmp_path / "kernel"
    (kernel / "arch/x86/include/asm").mkdir(parents=True)
    (kernel / "arch/x86/kvm").mkdir(parents=True)
    (kernel / "arch/x86/include/asm/kvm_host.h").write_text(KVM_HOST_H)
    (kernel / "arch/x86/kvm/x86.c").write_text(X86_C)
    (kernel / ".pre-commit-config.yaml").write_text(
        f"repos:\n  - repo: {shipped.as_uri()}\n    rev: {rev}\n    hooks:\n      - id: kvm-refactor-lint\n")
    _git(kernel, env, "init", "-q", ".")
    _git(kernel, env, "add", "-A")
    _git(kernel, env, "commit", "-q", "-m", "base")
    _run([pre_commit, "install"], kernel, env)

    x86 = kernel / "arch/x86/kvm/x86.c"
    x86.write_text(X86_C + BAD)
    _git(kernel, env, "add", "arch/x86/kvm/x86.c")
    refused = _git(kernel, env, "commit", "-q", "-m", "bad", ok=(1,))
    assert "[KVM001]" in refused.stdout + refused.stderr
    assert _git(kernel, env, "rev-list", "--count", "HEAD").stdout.strip() == "1"

    x86.write_text(X86_C + GOOD)
    _git(kernel, env, "add", "arch/x86/kvm/x86.c")
    _git(kernel, env, "commit", "-q", "-m", "good")
    assert _git(kernel, env, "rev-list", "--count", "HEAD").stdout.strip() == "2"

    # --all-files: nothing is staged; the files are linted as they are.
    clean = _run([pre_commit, "run", "--all-files"], kernel, env)
    assert "not a patch" not in clean.stdout + clean.stderr
    x86.write_text(X86_C + GOOD + BAD)
    _git(kernel, env, "add", "arch/x86/kvm/x86.c")
    _git(kernel, env, "commit", "-q", "--no-verify", "-m", "bad, bypassing the hook")
    dirty = _run([pre_commit, "run", "--all-files"], kernel, env, ok=(1,))
    assert "[KVM001]" in dirty.stdout and "not a patch" not in dirty.stdout + dirty.stderr

"""`series` on a git repository made from the real 7.2 tree."""
from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from refactor.plan.rewrite import plan_rewrite
from refactor.rules import load_rules, load_steps
from refactor.series.generate import SeriesError, generate

IDENT = ["-c", "user.name=A Maintainer", "-c", "user.email=am@example.com"]


def git(repo, *args, check=True):
    return subprocess.run(["git", *IDENT, *args], cwd=repo, capture_output=True, text=True, check=check).stdout


def make_repo(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns(".kvm-refactor-fetch.json"))
    git(dest, "init", "-q")
    git(dest, "add", "-A")
    git(dest, "commit", "-qm", "base")
    git(dest, "config", "user.name", "A Maintainer")
    git(dest, "config", "user.email", "am@example.com")
    return dest


@pytest.fixture(scope="module")
def repo72(trees, tmp_path_factory):
    return make_repo(trees["7.2"], tmp_path_factory.mktemp("r") / "linux")


# Files next to the KVM sources that git does not track: one untracked, one
# ignored.  Both use the old layout, so a rewrite of the working tree would edit them.
STRAYS = {"arch/x86/kvm/stray.c": b"#include \"x86.h\"\nvoid stray(struct kvm_vcpu *vcpu)\n"
                                  b"{\n\tvcpu->arch.walk_mmu->get_pdptr(vcpu, 0);\n}\n",
          "arch/x86/kvm/mmu/ignored.h": b"#define STRAY(v) ((v)->arch.walk_mmu)\n"}


@pytest.fixture(scope="module")
def series72(repo72, tmp_path_factory):
    out = tmp_path_factory.mktemp("patches")
    (repo72 / ".git/info/exclude").write_text("ignored.h\n")
    for rel, data in STRAYS.items():
        (repo72 / rel).write_bytes(data)
    before = git(repo72, "status", "--porcelain=v2", "--branch", "--ignored")
    try:
        result = generate(repo72, "upstream", "pagewalk", out)
        after = git(repo72, "status", "--porcelain=v2", "--branch", "--ignored")
    finally:
        for rel in STRAYS:
            (repo72 / rel).unlink()
    return result, out, (before, after)


def test_one_commit_per_step_with_kernel_subjects_and_signoff(repo72, series72):
    result, _, _ = series72
    steps = load_steps(load_rules())
    log = git(repo72, "log", "--format=%s%n%b%n--END--", "--reverse", "HEAD..pagewalk")
    commits = [c.strip() for c in log.split("--END--") if c.strip()]
    assert len(commits) == len(steps) == 9
    for text in commits:
        subject = text.splitlines()[0]
        assert re.match(r"KVM: (x86/mmu|x86|nVMX|nSVM): \S", subject) and len(subject) <= 75, subject
        assert "Signed-off-by: A Maintainer <am@example.com>" in text
        assert "rules/steps.toml" in text
        body = text.split("\n", 2)[2]
        assert len(body.split()) > 20  # says what and why


def test_checkout_and_index_are_untouched(repo72, series72):
    _, _, (before, after) = series72
    assert "stray.c" in before and "ignored.h" in before
    assert after == before
    assert git(repo72, "rev-parse", "--abbrev-ref", "HEAD").strip() in ("master", "main")


def test_untracked_and_ignored_files_are_never_committed(repo72, series72):
    files = git(repo72, "log", "--format=", "--name-only", "HEAD..pagewalk").split()
    assert files and not set(files) & set(STRAYS)
    assert not set(git(repo72, "ls-tree", "-r", "--name-only", "pagewalk").split()) & set(STRAYS)


def test_final_tree_equals_the_one_shot_rewrite(repo72, series72):
    plan = plan_rewrite(repo72, "upstream")
    assert plan.results
    for rel, data in plan.results.items():
        assert git(repo72, "show", f"pagewalk:{rel}").encode() == data, rel
    changed = git(repo72, "diff", "--name-only", "HEAD", "pagewalk").split()
    assert sorted(changed) == sorted(plan.results)


def test_format_patch_output_applies_with_git_am(repo72, series72, tmp_path):
    result, out, _ = series72
    patches = sorted(out.glob("*.patch"))
    assert patches[0].name == "0000-cover-letter.patch" and len(patches) == 10
    cover = patches[0].read_text()
    assert "*** SUBJECT HERE ***" not in cover and "*** BLURB HERE ***" not in cover
    assert "gva_walk" in cover and "ngpa_walk" in cover
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo72), str(clone)], check=True)
    proc = subprocess.run(["git", *IDENT, "am", "-q", *map(str, patches[1:])], cwd=clone, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    assert git(clone, "rev-parse", "HEAD^{tree}") == git(repo72, "rev-parse", "pagewalk^{tree}")


def test_reroll_count_gives_v2(repo72, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = generate(repo72, "upstream", "pagewalk-v2", "v2", reroll=2)
    assert all(p.parent == tmp_path / "v2" for p in result.patches)  # relative to the cwd
    names = [p.name for p in result.patches]
    assert names[0] == "v2-0000-cover-letter.patch"
    assert "[PATCH v2 1/9]" in result.patches[1].read_text()


def test_renaming_gives_a_series_that_differs_only_in_names(repo72):
    generate(repo72, "v1", "pagewalk-v1", None)
    generate(repo72, "upstream", "pagewalk-up", None)
    rd = git(repo72, "range-diff", "--no-color", "HEAD..pagewalk-v1", "HEAD..pagewalk-up")
    pairs = [line for line in rd.splitlines() if re.match(r"^\s*\d+:\s+\w+\s+[=!<>]", line)]
    assert len(pairs) == 9 and all(re.match(r"^\s*(\d+):\s+\w+\s+[=!]\s+\1:", p) for p in pairs), rd
    # Every line the range-diff shows changed is a renaming of the walkers.
    for a, b in zip(git(repo72, "log", "-p", "--format=%s%n%b", "HEAD..pagewalk-v1").splitlines(),
                    git(repo72, "log", "-p", "--format=%s%n%b", "HEAD..pagewalk-up").splitlines()):
        if a != b and not a.startswith("index "):  # blob ids differ with the content
            assert a.replace("cpu_walk", "gva_walk").replace("tdp_walk", "ngpa_walk") == b, (a, b)


def test_refuses_dirty_tree_missing_identity_and_existing_branch(repo72, tmp_path, monkeypatch):
    with pytest.raises(SeriesError, match="already exists"):
        generate(repo72, "upstream", "pagewalk", None)
    target = repo72 / "arch/x86/kvm/x86.c"
    saved = target.read_bytes()
    target.write_bytes(saved + b"/* wip */\n")
    try:
        with pytest.raises(SeriesError, match="uncommitted changes"):
            generate(repo72, "upstream", "other", None)
    finally:
        target.write_bytes(saved)
    bare = make_repo(repo72 / "arch/x86/kvm/mmu", tmp_path / "noid")
    git(bare, "config", "--unset", "user.name")
    # No identity anywhere: not in the repository, nor in a global or system config.
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    with pytest.raises(SeriesError, match="user.name and user.email"):
        generate(bare, "upstream", "x", None, rules=load_rules())


def series_cli(*args, env=None, cwd=None):
    import os
    import sys

    return subprocess.run([sys.executable, "-m", "refactor", "series", *map(str, args)], capture_output=True,
                          text=True, env=dict(os.environ, **(env or {})), cwd=cwd)


def test_cli_exit_codes(repo72, tmp_path):
    proc = series_cli(tmp_path, "--branch", "b")
    assert proc.returncode == 2 and "not a git repository" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("case,expect", [
    ("no-commits", "has no commits yet"),
    ("dubious", "owned by another user"),
    ("outdir-file", "exists and is not a directory"),
    ("outdir-has-patches", "already holds 1 patch files"),
])
def test_bad_setups_are_one_line_errors(repo72, tmp_path, case, expect):
    repo, env, extra = repo72, {}, []
    if case == "no-commits":
        repo = tmp_path / "empty"
        repo.mkdir()
        git(repo, "init", "-q")
    elif case == "dubious":
        env = {"GIT_TEST_ASSUME_DIFFERENT_OWNER": "1"}  # git's own switch for this check
    elif case == "outdir-file":
        (tmp_path / "out").write_text("")
        extra = ["--outdir", "out"]
    else:
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / "0001-KVM-x86-mmu-old.patch").write_text("")
        extra = ["--outdir", "out"]
    proc = series_cli(repo, "--branch", "b", *extra, env=env, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert expect in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "b" not in git(repo, "branch", "--format=%(refname:short)", check=False).split()


def test_force_replaces_old_patches_only(tmp_path, monkeypatch):
    from refactor.series.gitops import prepare_outdir

    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    for name in ("0000-cover-letter.patch", "v2-0012-KVM-x.patch", "notes.txt"):
        (tmp_path / "out" / name).write_text("")
    assert prepare_outdir("out", force=True) == tmp_path / "out"
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["notes.txt"]


def test_a_failure_after_the_branch_leaves_no_branch(repo72, monkeypatch, tmp_path):
    import refactor.series.generate as gen

    def boom(*args, **kwargs):
        raise SeriesError("format-patch failed")

    base = git(repo72, "rev-parse", "HEAD").strip()
    # The commits themselves are tested elsewhere: a series of no steps keeps this fast.
    monkeypatch.setattr(gen, "_make_commits", lambda *a, **k: gen.SeriesResult("gone", base, head=base))
    monkeypatch.setattr(gen, "format_patches", boom)
    with pytest.raises(SeriesError, match="format-patch failed"):
        generate(repo72, "upstream", "gone", tmp_path / "out")
    assert git(repo72, "branch", "--list", "gone") == ""


def test_every_step_builds_with_kbuild(tmp_path, monkeypatch):
    """The 0-day check: Kbuild after every commit of the series on a full tree (6.1)."""
    from test_build import full_tree

    monkeypatch.setenv("KVM_REFACTOR_CACHE", str(Path.home() / ".cache" / "kvm-refactor"))
    tree = full_tree("6.1")
    if not (tree / ".git").exists():
        git(tree, "init", "-q")
        git(tree, "add", "-A", "-f")  # Debian's top-level .gitignore ignores everything
        git(tree, "commit", "-qm", "Linux 6.1 (Debian linux-source)")
    git(tree, "config", "user.name", "A Maintainer")
    git(tree, "config", "user.email", "am@example.com")
    branch = f"pagewalk-build-{int(time.time())}"
    result = generate(tree, "upstream", branch, tmp_path / "out", build=True)
    made = [s for s in result.steps if s.commit]
    assert len(made) >= 7
    failed = [(s.subject, s.build.errors[:1] or s.build.log_tail) for s in made if not s.build.ok]
    assert failed == []
    assert "ok (" in (tmp_path / "out" / "0000-cover-letter.patch").read_text()

"""The cover letter, recipients and re-roll bookkeeping of a posted series.

git format-patch writes the per-patch shortlog and the diffstat; this module
adds what a KVM maintainer expects around them: a summary in prose, a
"Tested:" paragraph that says only what was run (with figures), b4's
`base-commit:` and `change-id:` trailers, and for a re-roll a changelog and
the `git range-diff` against the previous version's branch.

The change-id and the version of each generated branch are kept in the
repository's config (`branch.<name>.kvm-refactor-change-id`, `...-version`),
as b4 keeps its own in the branch description, so that v2 finds v1.
"""
from __future__ import annotations

import hashlib
import re
import subprocess
import tempfile
import time
from pathlib import Path

from refactor.series.gitops import SeriesError, git
from refactor.series.message import fill, wrap

COVER_SUBJECT = "KVM: x86/mmu: Split struct kvm_pagewalk out of struct kvm_mmu"

SUMMARY = """\
struct kvm_mmu does three jobs at once: it walks the guest's page tables,
it builds shadow or TDP page tables, and it checks the format of its own
SPTEs.  This series moves the first job to a new struct kvm_pagewalk, with
two walkers in struct kvm_vcpu_arch: {gva}, the CR0/CR3/CR4 page tables of
the level that runs (what walk_mmu pointed to), and {ngpa}, L1's EPT/NPT
tables (the L2 GPA -> L1 GPA stage).  walk_mmu and nested_mmu go away, and
struct rsvd_bits_validate becomes struct kvm_page_format, which also holds
the permission bitmaps of a walker.

Each patch builds and is meant to be reviewed on its own; the field moves
come first, then the functions that only walk take the walker, then the
old pointers go."""


def _config(top: Path, key: str) -> str | None:
    proc = subprocess.run(["git", "config", "--get", key], cwd=top, capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def previous_branch(top: Path, reroll: int, given: str | None) -> str | None:
    """The branch of version reroll-1: given, or the one this tool recorded as that version."""
    if given:
        if subprocess.run(["git", "rev-parse", "--verify", "-q", f"refs/heads/{given}"], cwd=top,
                          capture_output=True).returncode:
            raise SeriesError(f"--previous {given}: no such branch")
        return given
    if reroll <= 1:
        return None
    listing = git(top, "config", "--get-regexp", r"^branch\..*\.kvm-refactor-version$") \
        if _config_exists(top) else ""
    found = [line.split()[0][len("branch."):-len(".kvm-refactor-version")]
             for line in listing.splitlines() if line.split()[-1] == str(reroll - 1)]
    found = [b for b in found if subprocess.run(["git", "rev-parse", "--verify", "-q", f"refs/heads/{b}"],
                                                cwd=top, capture_output=True).returncode == 0]
    if len(found) != 1:
        raise SeriesError(f"--reroll-count {reroll}: give the branch of v{reroll - 1} with --previous "
                          f"({'none' if not found else ', '.join(found)} recorded as v{reroll - 1})")
    return found[0]


def _config_exists(top: Path) -> bool:
    return subprocess.run(["git", "config", "--get-regexp", r"^branch\..*\.kvm-refactor-version$"], cwd=top,
                          capture_output=True).returncode == 0


def change_id(top: Path, branch: str, previous: str | None) -> str:
    """b4's change-id: kept from the previous version, else new (date, slug, hash)."""
    if previous:
        old = _config(top, f"branch.{previous}.kvm-refactor-change-id")
        if old:
            return old
    digest = hashlib.sha1(f"{top.resolve()}\0{branch}\0{time.time()}".encode()).hexdigest()[:12]
    return f"{time.strftime('%Y%m%d', time.gmtime())}-kvm-pagewalk-{digest}"


def record(top: Path, branch: str, cid: str, version: int, base: str) -> None:
    git(top, "config", f"branch.{branch}.kvm-refactor-change-id", cid)
    git(top, "config", f"branch.{branch}.kvm-refactor-version", str(version))
    git(top, "config", f"branch.{branch}.kvm-refactor-base", base)


def previous_range(top: Path, previous: str, base: str) -> str:
    """The previous version as a range: from its own base (recorded), else the merge base."""
    old_base = _config(top, f"branch.{previous}.kvm-refactor-base") or git(top, "merge-base", base, previous)
    return f"{old_base}..{previous}"


def maintainers(top: Path, base: str, branch: str) -> tuple[list[str], list[str]]:
    """To (maintainers) and Cc (lists, reviewers) from the tree's get_maintainer.pl, offline."""
    script = top / "scripts" / "get_maintainer.pl"
    if not script.is_file() or not (top / "MAINTAINERS").is_file():
        return [], []
    with tempfile.NamedTemporaryFile("w", suffix=".patch") as diff:
        diff.write(git(top, "diff", f"{base}..{branch}") + "\n")
        diff.flush()
        common = ["perl", str(script), "--no-git", "--no-git-fallback", "--norolestats", "--no-tree"]
        to = _people(subprocess.run(common + ["--no-l", "--no-r", diff.name], cwd=top, capture_output=True,
                                    text=True))
        cc = _people(subprocess.run(common + ["--no-m", diff.name], cwd=top, capture_output=True, text=True))
    return to, [c for c in cc if c not in to]


def _people(proc: subprocess.CompletedProcess) -> list[str]:
    if proc.returncode:
        return []
    return [line.strip() for line in proc.stdout.splitlines() if "@" in line]


def changelog(top: Path, base: str, previous: str, branch: str, reroll: int) -> list[str]:
    """"Changes in vN": what the range-diff shows, patch by patch."""
    rd = git(top, "range-diff", "--no-color", previous_range(top, previous, base), f"{base}..{branch}")
    out = []
    for line in rd.splitlines():
        m = re.match(r"^\s*(-|\d+):\s+(-+|\w+)\s+([=!<>])\s+(-|\d+):\s+(-+|\w+)\s+(.*)$", line)
        if not m:
            continue
        sign, subject = m.group(3), m.group(6)
        if sign == "<":
            out.append(f"- Dropped \"{subject}\".")
        elif sign == ">":
            out.append(f"- New patch \"{subject}\".")
        elif sign == "!":
            out.append(f"- Changed \"{subject}\".")
    return out or ["- No change to the patches (rebuilt from the same rules)."]


def tested(result) -> list[str]:
    """What was run, with figures; nothing that was not run."""
    from refactor.kernel.build import CONFIG_LABELS

    made = [s for s in result.steps if s.commit]
    built = [s for s in made if s.build is not None]
    verified = [s for s in made if s.verify is not None]
    lines = []
    if built:
        ok = sum(1 for s in built if s.build.ok)
        secs = [s.build.seconds for s in built]
        config = CONFIG_LABELS.get(result.config or "builtin", result.config)
        lines.append(f"Tested: built arch/x86/kvm/ with Kbuild ({config}) after each of the "
                     f"{len(built)} patches: {ok} of {len(built)} built, {sum(secs):.0f} s in all "
                     f"({min(secs):.0f}-{max(secs):.0f} s a patch).")
        for s in built:
            if not s.build.ok:
                first = s.build.errors[0] if s.build.errors else None
                lines.append(f"Build FAILED after \"{s.subject}\""
                             + (f": {first.file}:{first.line}: {first.message}" if first else
                                f": {s.build.reason}" if s.build.reason else "") + ".")
    if verified:
        same = sum(1 for s in verified if not s.verify.divergences)
        events = sum(s.verify.events for s in verified)
        lines.append(f"{'Tested' if not built else 'Also'}: ran the MMU code of the base and of each "
                     f"of the {len(verified)} patches natively on the same {events // len(verified)} "
                     f"page-walk events (kvm-refactor verify): {same} of {len(verified)} behave as the base.")
    if not lines:
        lines.append("Not tested: generated without --build or --verify, so no patch of this posting "
                     "was built or run.")
    return [wrap(" ".join(lines))]


def fill_cover(text: str, result, names, *, cid: str, log: list[str] | None, reroll: int | None) -> str:
    skipped = [s for s in result.steps if not s.commit]
    blurb = [wrap(fill(SUMMARY, names)), ""]
    if log is not None:
        blurb += [f"Changes in v{reroll}:", *log, ""]
    blurb += tested(result)
    if skipped:
        blurb += ["", wrap("Steps of the refactor with nothing to do on this tree: "
                           + ", ".join(f"\"{s.subject}\"" for s in skipped) + ".")]
    text = text.replace("*** SUBJECT HERE ***", COVER_SUBJECT)
    text = text.replace("*** BLURB HERE ***", "\n".join(blurb))
    m = re.search(r"^base-commit: [0-9a-f]+\n", text, re.M)
    if m:
        text = text[:m.end()] + f"change-id: {cid}\n" + text[m.end():]
    return text

"""A series' later patches that need an earlier one which did not port.

`port` applies a series in order: each patch goes onto the target as the ones before it
left it, and a patch that conflicts leaves it unchanged.  A later hunk whose context holds
lines only that earlier patch adds then conflicts too, and its reason ("context differs",
"foo() is not defined") hides the cause.  A stable maintainer needs the order: port patch
N first.  This module finds such hunks and says so at the head of their reason.
"""
from __future__ import annotations

from dataclasses import dataclass

from refactor.port.align import norm as _norm


def _telling(line: str) -> bool:
    """A line that identifies code, not a brace, a blank or a lone keyword."""
    return len(_norm(line)) > 3 and any(c.isalnum() for c in line)


@dataclass(frozen=True)
class Unported:
    """An earlier patch of the series that conflicted: what its hunks add, per file."""
    label: str
    added: dict[str, frozenset[str]]


def unported(mail, index: int, total: int) -> Unported:
    """Patch `index` (0-based) of a series of `total`."""
    added: dict[str, set[str]] = {}
    for fp in mail.patch.files:
        for h in fp.hunks:
            pre = {_norm(t) for g, t, _ in h.lines if g != "+"}
            added.setdefault(fp.path, set()).update(
                _norm(t) for g, t, _ in h.lines if g == "+" and _telling(t) and _norm(t) not in pre)
    return Unported(f"patch {index + 1}/{total} '{mail.label}'", {k: frozenset(v) for k, v in added.items()})


def blame_earlier(result, earlier: list[Unported]) -> None:
    """Head the reason of each conflicting hunk of `result` whose pre-image holds lines an
    earlier conflicting patch adds (and the target lacks there) with that patch."""
    if not earlier:
        return
    hunks = {(fp.path, h.old_start): h for fp in result.mail.patch.files for h in fp.hunks}
    for hr in result.hunks:
        hunk = hunks.get((hr.file, hr.old_start))
        if hr.status != "conflict" or hunk is None:
            continue
        pre = [_norm(t) for g, t, _ in hunk.lines if g != "+" and _telling(t)]
        for dep in reversed(earlier):          # the nearest earlier patch first
            needed = [x for x in pre if x in dep.added.get(hr.file, ())]
            if needed:
                shown = "`, `".join(needed[:3]) + ("`, ..." if len(needed) > 3 else "`")
                hr.reason = (f"needs {dep.label}, which conflicted: its added lines are this hunk's "
                             f"context (`{shown}); port that patch first. " + (hr.reason or ""))
                break

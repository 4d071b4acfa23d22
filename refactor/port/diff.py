"""A ported file as git writes its diff: `index` blob ids and function headings.

Ported patches are many and small; running git once per file costs more than
the port itself, so the diff is written here the way `git diff` writes it:
three lines of context, `index <old>..<new> <mode>` with the blob ids (so that
`git am -3` can fall back to a three-way merge), and after each `@@` the
nearest line above the hunk that starts with a letter, `_` or `$` (git's
default function heading).
"""
from __future__ import annotations

import difflib
import hashlib
import re

_HEADING = re.compile(r"[A-Za-z_$]")


def blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _range(start: int, length: int) -> str:
    if length == 1:
        return str(start + 1)
    return f"{start + 1 if length else start},{length}"


def _heading(lines: list[str], before: int) -> str:
    for i in range(min(before, len(lines)) - 1, -1, -1):
        if _HEADING.match(lines[i]):
            return " " + lines[i].rstrip()[:80]
    return ""


def region_diff(rel: str, old: str, regions: list[tuple[int, int, list[str]]],
                mode: str = "100644") -> tuple[str, str]:
    """The new text and its diff when lines [start, start + length) of `old` become the given
    lines, for each region: only the regions are compared, not the whole file."""
    a = old.split("\n")
    b: list[str] = []
    changes = []   # (tag, i1, i2, j1, j2) in whole-file line numbers
    pos = 0
    for start, length, lines in sorted(regions):
        b.extend(a[pos:start])
        j0 = len(b)
        for tag, x1, x2, y1, y2 in difflib.SequenceMatcher(None, a[start:start + length], lines,
                                                            autojunk=False).get_opcodes():
            if tag != "equal":
                changes.append((tag, start + x1, start + x2, j0 + y1, j0 + y2))
        b.extend(lines)
        pos = start + length
    b.extend(a[pos:])
    new = "\n".join(b)
    if not changes:
        return new, ""
    # Group the changes with three lines of context, as git does.
    groups, cur = [], [changes[0]]
    for ch in changes[1:]:
        if ch[1] - cur[-1][2] <= 6:
            cur.append(ch)
        else:
            groups.append(cur)
            cur = [ch]
    groups.append(cur)
    eol = old.endswith("\n")
    n_a = len(a) - 1 if eol else len(a)
    out = [f"diff --git a/{rel} b/{rel}",
           f"index {blob_id(old.encode())[:12]}..{blob_id(new.encode())[:12]} {mode}",
           f"--- a/{rel}", f"+++ b/{rel}"]
    for group in groups:
        delta = group[0][3] - group[0][1]
        i1 = max(group[0][1] - 3, 0)
        i2 = min(group[-1][2] + 3, n_a)
        end_delta = group[-1][4] - group[-1][2]
        j1, j2 = i1 + delta, i2 + end_delta
        out.append(f"@@ -{_range(i1, i2 - i1)} +{_range(j1, j2 - j1)} @@{_heading(a, i1)}")
        i = i1
        for tag, x1, x2, y1, y2 in group:
            out += [" " + x for x in a[i:x1]]
            out += ["-" + x for x in a[x1:x2]]
            out += ["+" + y for y in b[y1:y2]]
            i = x2
        out += [" " + x for x in a[i:i2]]
    return new, "\n".join(out) + "\n"


def file_diff(rel: str, old: str, new: str, mode: str = "100644") -> str:
    a, b = old.split("\n"), new.split("\n")
    # A final newline is an empty last element: not a line of its own.
    a_eol, b_eol = old.endswith("\n"), new.endswith("\n")
    if a_eol:
        a = a[:-1]
    if b_eol:
        b = b[:-1]
    groups = list(difflib.SequenceMatcher(None, a, b, autojunk=False).get_grouped_opcodes(3))
    if not groups:
        return ""
    out = [f"diff --git a/{rel} b/{rel}",
           f"index {blob_id(old.encode())[:12]}..{blob_id(new.encode())[:12]} {mode}",
           f"--- a/{rel}", f"+++ b/{rel}"]
    for group in groups:
        i1, i2, j1, j2 = group[0][1], group[-1][2], group[0][3], group[-1][4]
        out.append(f"@@ -{_range(i1, i2 - i1)} +{_range(j1, j2 - j1)} @@{_heading(a, i1)}")
        for tag, x1, x2, y1, y2 in group:
            if tag == "equal":
                out += [" " + x for x in a[x1:x2]]
                continue
            out += ["-" + x for x in a[x1:x2]]
            if x2 == len(a) and not a_eol:
                out.append("\\ No newline at end of file")
            out += ["+" + y for y in b[y1:y2]]
            if y2 == len(b) and not b_eol:
                out.append("\\ No newline at end of file")
    return "\n".join(out) + "\n"

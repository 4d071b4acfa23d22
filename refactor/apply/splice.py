"""Apply planned edits to file contents, in kernel style, and show them as a diff.

Edits are byte ranges of the original file.  Applying keeps everything else
byte for byte; a statement that was dropped takes its whole line with it;
continuation lines that were aligned under an open parenthesis are aligned
again when the text before that parenthesis changed length.
"""
from __future__ import annotations

import difflib
import os
import re
import tempfile
from pathlib import Path

from refactor.plan.edits import DROP, Edit

TAB = 8
MAX_COLUMNS = 100


from refactor.errors import EditConflict  # noqa: E402,F401  (defined there; re-exported here)


def _resolve(edits: list[Edit]) -> list[Edit]:
    """Sorted, with edits inside a larger edit of the same span dropped."""
    out: list[Edit] = []
    # At one offset: insertions first (in plan order), then the longest edit.
    for e in sorted(edits, key=lambda e: (e.start, e.end > e.start, -(e.end - e.start))):
        if out and (e.start < out[-1].end or (e.start == out[-1].start and e.end > e.start
                                              and out[-1].end > out[-1].start)):
            last = out[-1]
            if (e.start, e.end, e.new) == (last.start, last.end, last.new):
                continue  # the same edit planned twice
            raise EditConflict(f"{e.file}:{e.line}: overlapping edits ({last.rule} and {e.rule}): "
                               "this site needs a human")
        out.append(e)
    return out


def vis_width(s: str) -> int:
    w = 0
    for ch in s:
        w = (w // TAB + 1) * TAB if ch == "\t" else w + 1
    return w


def indent_to(width: int) -> str:
    return "\t" * (width // TAB) + " " * (width % TAB)


def _open_parens(line: str) -> list[int]:
    """Visual columns of parentheses still open at the end of a line."""
    stack: list[int] = []
    col = 0
    in_str = None
    for ch in line:
        if in_str:
            if ch == in_str:
                in_str = None
        elif ch in "\"'":
            in_str = ch
        elif ch == "(":
            stack.append(col)
        elif ch == ")" and stack:
            stack.pop()
        col = (col // TAB + 1) * TAB if ch == "\t" else col + 1
    return stack


def realign(old_lines: list[str], new_lines: list[str], changed: set[int]) -> list[str]:
    """Re-indent continuation lines that were aligned under a paren that moved.

    old_lines/new_lines are the same statement's lines (same count); `changed`
    holds the indexes of lines whose text an edit touched.
    """
    out = list(new_lines)
    for i in range(len(old_lines) - 1):
        if i not in changed:
            continue
        old_open, new_open = _open_parens(old_lines[i]), _open_parens(out[i])
        if not old_open or len(old_open) != len(new_open) or old_open[-1] == new_open[-1]:
            continue
        want_old, want_new = old_open[-1] + 1, new_open[-1] + 1
        j = i + 1
        while j < len(old_lines):
            body = old_lines[j].lstrip(" \t")
            if vis_width(old_lines[j][:len(old_lines[j]) - len(body)]) != want_old:
                break
            out[j] = indent_to(want_new) + out[j].lstrip(" \t")
            if not _open_parens(old_lines[j]) and ")" in old_lines[j] and old_lines[j].count(")") > \
                    old_lines[j].count("("):
                break
            j += 1
    return out


def apply(src: bytes, edits: list[Edit]) -> bytes:
    """New file content: edits applied, dropped lines removed, continuations realigned.

    Work is done per group of whole lines that edits touch (plus a few lines
    after, where continuation lines live), so cost follows the change, not the
    file.
    """
    edits = _resolve(edits)
    if not edits:
        return src
    text = src.decode("utf-8", "surrogateescape")
    # Edits are byte offsets; work in str offsets.
    to_str = _offset_map(src)
    starts = _line_starts(text)
    groups: list[list] = []
    for e in edits:
        s, t = to_str(e.start), to_str(e.end)
        ls, le = _line_of(starts, s), _line_of(starts, max(s, t - 1)) + 1
        if e.end == e.start:
            le = ls + 1
        if groups and ls < groups[-1][1]:
            groups[-1][1] = max(groups[-1][1], le)
            groups[-1][2].append((s, t, e.new))
        else:
            groups.append([ls, le, [(s, t, e.new)]])
    out: list[str] = []
    pos_line = 0
    nlines = len(starts)
    for gi, (ls, le, items) in enumerate(groups):
        limit = groups[gi + 1][0] if gi + 1 < len(groups) else nlines
        out.append(text[starts[pos_line]:starts[ls]] if ls > pos_line else "")
        seg_start = starts[ls]
        seg_end = starts[le] if le < nlines else len(text)
        seg = []
        cur = seg_start
        for s, t, new in items:
            seg.append(text[cur:s])
            seg.append(new)
            cur = t
        seg.append(text[cur:seg_end])
        old_seg = text[seg_start:seg_end]
        new_seg = _drop_marked("".join(seg))
        # Continuation lines right after the group may hang on a moved paren.
        ctx_end = le
        while ctx_end < min(limit, le + 12) and text[starts[ctx_end]:starts[ctx_end] + 1] in (" ", "\t"):
            ctx_end += 1
        tail = text[seg_end:starts[ctx_end] if ctx_end < nlines else len(text)]
        fixed = _realign_segment(old_seg + tail, new_seg + tail, len(new_seg.splitlines()))
        out.append(fixed)
        pos_line = ctx_end if ctx_end > le else le
        if pos_line >= nlines:
            pos_line = nlines
    if pos_line < nlines:
        out.append(text[starts[pos_line]:])
    return "".join(out).encode("utf-8", "surrogateescape")


def _offset_map(src: bytes):
    if src.isascii():
        return lambda b: b
    cache: dict[int, int] = {}

    def conv(b: int) -> int:
        if b not in cache:
            cache[b] = len(src[:b].decode("utf-8", "surrogateescape"))
        return cache[b]
    return conv


def _line_starts(text: str) -> list[int]:
    starts = [0]
    i = text.find("\n")
    while i >= 0 and i + 1 < len(text):
        starts.append(i + 1)
        i = text.find("\n", i + 1)
    return starts


def _line_of(starts: list[int], pos: int) -> int:
    import bisect

    return bisect.bisect_right(starts, pos) - 1


def _drop_marked(text: str) -> str:
    if DROP not in text:
        return text
    out = []
    for line in text.splitlines(keepends=True):
        if DROP in line:
            line = line.replace(DROP, "")
            if not line.strip():
                continue
        out.append(line)
    return "".join(out)


def _realign_segment(old: str, new: str, changed_lines: int) -> str:
    """Realign continuation lines within one changed segment (old and new text)."""
    old_lines = old.splitlines(keepends=True)
    new_lines = new.splitlines(keepends=True)
    sm = difflib.SequenceMatcher(None, old_lines, new_lines, autojunk=False)
    result = list(new_lines)
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        if tag != "replace" or i2 - i1 != j2 - j1:
            continue
        span_old = [x.rstrip("\n") for x in old_lines[i1:]]
        span_new = [x.rstrip("\n") for x in result[j1:j1 + len(span_old)]]
        n = min(len(span_old), len(span_new))
        fixed = realign(span_old[:n], span_new[:n], set(range(i2 - i1)))
        for k, line in enumerate(fixed):
            nl = "\n" if result[j1 + k].endswith("\n") else ""
            result[j1 + k] = line + nl
    return "".join(result)


def unified_diffs(changes: dict[str, tuple[bytes, bytes]]) -> str:
    """A git-style diff of several files: git's own diff when git is there, else difflib."""
    import shutil
    import subprocess

    if not changes:
        return ""
    if shutil.which("git") is None:
        return "".join(unified_diff(rel, old, new) for rel, (old, new) in sorted(changes.items()))
    with tempfile.TemporaryDirectory(prefix="kvm-refactor-diff-") as tmp:
        for rel, (old, new) in changes.items():
            for side, data in (("a", old), ("b", new)):
                path = Path(tmp, side, rel)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
        proc = subprocess.run(["git", "-c", "core.quotepath=off", "diff", "--no-index", "--no-color",
                               "--no-ext-diff", "--src-prefix=a/", "--dst-prefix=b/", "a", "b"],
                              cwd=tmp, capture_output=True)
    out = proc.stdout.decode("utf-8", "surrogateescape")
    # The sides are directories a/ and b/: drop that extra level from the paths,
    # which git may have quoted ("a/a/x\ny.c") when they hold odd characters.
    return "\n".join(_strip_side_dir(line) for line in out.split("\n"))


def _strip_side_dir(line: str) -> str:
    if line.startswith("diff --git "):
        rest = line[len("diff --git "):]
        half = (len(rest) - 1) // 2  # both sides name the same path, quoted alike
        left, right = rest[:half], rest[half + 1:]
        return f"diff --git {_drop_level(left)} {_drop_level(right)}"
    if line.startswith(("--- ", "+++ ")) and not line.startswith(("--- /dev/null", "+++ /dev/null")):
        return line[:4] + _drop_level(line[4:])
    return line


def _drop_level(path: str) -> str:
    q = '"' if path.startswith('"') else ""
    body = path[len(q):]
    if body[:4] in ("a/a/", "b/b/"):
        body = body[2:]
    return q + body


def unified_diff(rel: str, old: bytes, new: bytes) -> str:
    a = old.decode("utf-8", "surrogateescape").splitlines(keepends=True)
    b = new.decode("utf-8", "surrogateescape").splitlines(keepends=True)
    # autojunk off: in C, "{", "}" and blank lines are frequent but not noise.
    groups = list(difflib.SequenceMatcher(None, a, b, autojunk=False).get_grouped_opcodes(3))
    if not groups:
        return ""
    out = [f"diff --git a/{rel} b/{rel}\n", f"--- a/{rel}\n", f"+++ b/{rel}\n"]
    for group in groups:
        i1, i2, j1, j2 = group[0][1], group[-1][2], group[0][3], group[-1][4]
        out.append(f"@@ -{_range(i1, i2)} +{_range(j1, j2)} @@\n")
        for tag, a1, a2, b1, b2 in group:
            if tag == "equal":
                out += [_line(" ", x) for x in a[a1:a2]]
                continue
            out += [_line("-", x) for x in a[a1:a2]]
            out += [_line("+", x) for x in b[b1:b2]]
    return "".join(out)


def _range(start: int, stop: int) -> str:
    length = stop - start
    first = start + 1 if length else start
    return f"{first}" if length == 1 else f"{first},{length}"


def _line(mark: str, text: str) -> str:
    return mark + text if text.endswith("\n") else f"{mark}{text}\n\\ No newline at end of file\n"


def long_lines(rel: str, old: bytes, new: bytes) -> list[tuple[int, int]]:
    """(line, width) of lines this change made longer than 100 columns."""
    before = {line for line in old.decode("utf-8", "replace").splitlines() if vis_width(line) > MAX_COLUMNS}
    out = []
    for n, line in enumerate(new.decode("utf-8", "replace").splitlines(), 1):
        w = vis_width(line)
        if w > MAX_COLUMNS and line not in before:
            out.append((n, w))
    return out


def write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise

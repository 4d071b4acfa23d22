"""Unified diffs and mboxes: git format-patch, git diff, plain diff -u.

Only what lint needs: for each patch, each file's new path, its hunks, and
which lines of the patched file are added (with their new line numbers).
Hunk line counts are honoured, so a format-patch signature ("-- ") or a
mail footer after the last hunk is never taken for a removed line.
"""
from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field

_HUNK = re.compile(r"@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@ ?(.*)")
_MBOX_FROM = re.compile(r"From [0-9a-f]{7,64} \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}$")
_SUBJECT = re.compile(r"Subject: (.*)")
_NUMBER = re.compile(r"\[[^\]]*?(\d+)/(\d+)[^\]]*\]")


from refactor.errors import PatchError  # noqa: E402,F401  (defined there; re-exported here)


@dataclass
class Hunk:
    old_start: int
    old_len: int
    new_start: int
    new_len: int
    section: str  # the function heading git prints after @@
    # (tag, text, new line number or None): tag is " ", "+" or "-".
    lines: list[tuple[str, str, int | None]] = field(default_factory=list)


@dataclass
class FilePatch:
    old_path: str | None  # None: a new file
    new_path: str | None  # None: a deleted file
    hunks: list[Hunk] = field(default_factory=list)
    binary: bool = False

    @property
    def path(self) -> str:
        return self.new_path or self.old_path or "?"

    def added(self) -> dict[int, str]:
        """New line number -> text of every added line."""
        return {n: t for h in self.hunks for tag, t, n in h.lines if tag == "+" and n is not None}

    def pre_image_text(self) -> str:
        return "\n".join(t for h in self.hunks for tag, t, _ in h.lines if tag != "+")

    def post_image_sparse(self) -> bytes:
        """Context and added lines at their new line numbers, blank lines elsewhere.

        Byte offsets then map to the patched file's line numbers directly.
        """
        by_line: dict[int, str] = {}
        for h in self.hunks:
            for tag, text, n in h.lines:
                if tag != "-" and n is not None:
                    by_line[n] = text
        if not by_line:
            return b""
        last = max(by_line)
        return ("\n".join(by_line.get(i, "") for i in range(1, last + 1)) + "\n").encode()

    def applied_in(self, text: str) -> bool:
        """Does `text` already hold every hunk's post-image (a work tree with the change)?"""
        lines = text.split("\n")
        for h in self.hunks:
            want = [t for tag, t, _ in h.lines if tag != "-"]
            at = h.new_start - 1 if h.new_len else h.new_start
            if not any(lines[at + d:at + d + len(want)] == want for d in range(-50, 51) if at + d >= 0):
                return False
        return True

    def apply_to(self, original: str) -> str | None:
        """The patched file, or None when the hunks do not match `original`.

        A hunk may sit a few lines off (as `patch` allows), never with fuzz.
        """
        lines = original.split("\n")
        out: list[str] = []
        pos = 0  # next unread line of `original` (0-based)
        shift = 0
        for h in self.hunks:
            want = [t for tag, t, _ in h.lines if tag != "+"]
            start = h.old_start - 1 + shift if h.old_len else h.old_start + shift
            found = None
            for delta in sorted(range(-50, 51), key=abs):
                at = start + delta
                if at >= pos and lines[at:at + len(want)] == want:
                    found = at
                    break
            if found is None:
                return None
            shift += found - start
            out.extend(lines[pos:found])
            out.extend(t for tag, t, _ in h.lines if tag != "-")
            pos = found + len(want)
        out.extend(lines[pos:])
        return "\n".join(out)


@dataclass
class Patch:
    subject: str | None
    number: tuple[int, int] | None  # (3, 20) for [PATCH 3/20]
    start_line: int  # line of the input where this patch starts (1-based)
    files: list[FilePatch] = field(default_factory=list)

    @property
    def label(self) -> str:
        num = f"{self.number[0]}/{self.number[1]} " if self.number else ""
        return f"{num}{self.subject}" if self.subject else f"{num}(line {self.start_line})".strip()


# git's C-style quoting of odd path names (quote.c: sq_quote / quote_c_style).
_C_ESCAPES = {"a": 7, "b": 8, "t": 9, "n": 10, "v": 11, "f": 12, "r": 13, '"': 34, "\\": 92}
# No real source file has this many lines; a larger line number in a hunk
# header is hostile input (it would size the sparse post-image).
MAX_LINE = 10_000_000


def unquote_c(quoted: str) -> str:
    """The path inside git's "..." quoting; bytes that are not UTF-8 come back as surrogates."""
    body = quoted[1:-1]
    out = bytearray()
    i = 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out += ch.encode("utf-8", "surrogateescape")
            i += 1
            continue
        nxt = body[i + 1:i + 2]
        if nxt in _C_ESCAPES:
            out.append(_C_ESCAPES[nxt])
            i += 2
        elif len(body) >= i + 4 and all(c in "01234567" for c in body[i + 1:i + 4]) and body[i + 1] in "0123":
            out.append(int(body[i + 1:i + 4], 8))
            i += 4
        else:
            raise PatchError(f"bad escape {body[i:i + 2]!r} in quoted path {quoted!r}")
    return out.decode("utf-8", "surrogateescape")


def _quoted_end(text: str) -> int:
    """Index of the quote closing the quoted path at the start of `text`."""
    i = 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
        elif text[i] == '"':
            return i
        else:
            i += 1
    raise PatchError(f"unterminated quoted path {text!r}")


def _git_paths(parts: str) -> tuple[str, str]:
    """The two paths of a `diff --git A B` line (either may be quoted)."""
    if parts.startswith('"'):
        end = _quoted_end(parts)
        return parts[:end + 1], parts[end + 1:].lstrip(" ")
    if parts.endswith('"') and ' "' in parts:
        a, _, b = parts.rpartition(' "')
        return a, '"' + b
    if " b/" in parts:
        a, _, b = parts.partition(" b/")
        return a, "b/" + b
    a, _, b = parts.partition(" ")
    return a, b


def _strip_prefix(path: str) -> str | None:
    if path.startswith('"'):
        path = unquote_c(path[:_quoted_end(path) + 1])
    else:
        path = path.split("\t")[0].rstrip()
    if path == "/dev/null":
        return None
    # git's a/ b/ (or i/ w/ c/ o/ with diff.mnemonicPrefix) are dropped, like -p1.
    if len(path) > 2 and path[1] == "/" and path[0] in "abciow":
        return path[2:]
    return path


def _header_paths(old_field: str, new_field: str) -> tuple[str | None, str | None]:
    """The paths of a `--- OLD` / `+++ NEW` pair.  git's one-letter prefixes go as in
    _strip_prefix(); other tools' top directories go the way `patch -p1` drops them when the
    two sides name different ones (quilt's `linux.orig/` and `linux/`, `diff -ru a.orig b`).
    Equal first components are a diff without prefixes (`git diff --no-prefix`): kept."""
    old, new = _strip_prefix(old_field), _strip_prefix(new_field)
    raw = [f.split("\t")[0].rstrip() if not f.startswith('"') else None for f in (old_field, new_field)]
    if old is not None and new is not None and old == raw[0] and new == raw[1]:
        a, b = old.split("/", 1), new.split("/", 1)
        if len(a) == 2 and len(b) == 2 and a[0] != b[0] and a[1] and b[1]:
            return a[1], b[1]
    return old, new


def parse_patches(text: str, name: str = "<patch>") -> list[Patch]:
    """Every patch in `text` (one diff, or an mbox of several). Raises PatchError."""
    lines = text.replace("\r\n", "\n").split("\n")
    patches: list[Patch] = []
    current: Patch | None = None
    fp: FilePatch | None = None
    i, n = 0, len(lines)
    pending_git: tuple[str | None, str | None] | None = None
    headed: dict[int, int] = {}   # id of a FilePatch that has --- / +++ lines -> their line

    def patch_here(at: int) -> Patch:
        nonlocal current
        if current is None:
            current = Patch(None, None, at + 1)
            patches.append(current)
        return current

    while i < n:
        line = lines[i]
        if _MBOX_FROM.match(line):
            current, fp, pending_git = Patch(None, None, i + 1), None, None
            patches.append(current)
            i += 1
            continue
        m = _SUBJECT.match(line)
        if m and fp is None:
            subject = m.group(1)
            # Folded header lines continue with whitespace.
            while i + 1 < n and lines[i + 1][:1] in (" ", "\t") and lines[i + 1].strip():
                i += 1
                subject += " " + lines[i].strip()
            p = patch_here(i)
            if p.subject is not None and p.files:
                # A second Subject without a From line: a new mail.
                p = current = Patch(None, None, i + 1)
                patches.append(p)
            num = _NUMBER.search(subject)
            p.number = (int(num.group(1)), int(num.group(2))) if num else None
            p.subject = re.sub(r"^\[[^\]]*\]\s*", "", subject)
            i += 1
            continue
        if line.startswith("diff --git "):
            try:
                a, b = _git_paths(line[len("diff --git "):])
                pending_git = (_strip_prefix(a), _strip_prefix(b))
            except PatchError as exc:
                raise PatchError(f"{name}:{i + 1}: {exc}") from None
            fp = FilePatch(pending_git[0], pending_git[1])
            patch_here(i).files.append(fp)
            i += 1
            continue
        if fp is not None and pending_git is not None and not fp.hunks:
            if line.startswith("new file mode"):
                fp.old_path = None
            elif line.startswith("deleted file mode"):
                fp.new_path = None
            elif line.startswith(("rename to ", "copy to ")):
                fp.new_path = line.split(" ", 2)[2]
            elif line.startswith(("Binary files ", "GIT binary patch")):
                fp.binary = True
        if line.startswith("--- ") and i + 1 < n and lines[i + 1].startswith("+++ "):
            try:
                old, new = _header_paths(line[4:], lines[i + 1][4:])
            except PatchError as exc:
                raise PatchError(f"{name}:{i + 1}: {exc}") from None
            if fp is None or fp.hunks or pending_git is None:
                fp = FilePatch(old, new)
                patch_here(i).files.append(fp)
            else:
                fp.old_path, fp.new_path = old, new
            headed[id(fp)] = i + 1
            pending_git = None
            i += 2
            continue
        m = _HUNK.match(line)
        if m and fp is not None:
            i = _read_hunk(lines, i, m, fp, name)
            continue
        if line.startswith("@@ ") and fp is None:
            raise PatchError(f"{name}:{i + 1}: hunk without a file header (--- / +++ lines)")
        if line.startswith("@@ "):
            # Inside a file's diff an @@ line is a hunk: one that does not parse is a corrupt
            # patch (git apply refuses it too), not prose to skip.
            raise PatchError(f"{name}:{i + 1}: malformed hunk header {line[:60]!r} "
                             "(expected '@@ -START[,COUNT] +START[,COUNT] @@')")
        i += 1

    for p in patches:
        for f in p.files:
            if not f.hunks and id(f) in headed:
                # git writes --- / +++ only above hunks: without one the diff was cut short.
                raise PatchError(f"{name}:{headed[id(f)]}: {f.path}: a file header with no hunk")
    patches = [p for p in patches if p.files]
    _check_nesting(patches, name)
    if not patches:
        raise PatchError(f"{name}: not a patch (no unified diff: no '--- a/FILE' / '+++ b/FILE' / '@@' lines)")
    return patches


def _check_nesting(patches: list[Patch], name: str) -> None:
    """The post-images are parsed and walked recursively: the tree's size and nesting limits hold for them."""
    from refactor.frontend.source import MAX_BYTES, MAX_NESTING, nesting_depth

    for p in patches:
        for fp in p.files:
            post = "\n".join(t for h in fp.hunks for tag, t, _ in h.lines if tag != "-").encode("utf-8",
                                                                                              "surrogateescape")
            if len(post) > MAX_BYTES:
                raise PatchError(f"{name}: {fp.path}: {len(post)} bytes of new code, larger than the "
                                 f"{MAX_BYTES // (1024 * 1024)} MiB limit for one source file")
            depth, _ = nesting_depth(post)
            if depth > MAX_NESTING:
                raise PatchError(f"{name}: {fp.path}: added code nested {depth} levels deep (brackets, ?: and "
                                 f"#if), more than the limit of {MAX_NESTING}")


def _read_hunk(lines: list[str], i: int, m: re.Match, fp: FilePatch, name: str) -> int:
    old_start, new_start = int(m.group(1)), int(m.group(3))
    old_len = int(m.group(2)) if m.group(2) is not None else 1
    new_len = int(m.group(4)) if m.group(4) is not None else 1
    # Bounded by the patch itself: a hunk cannot be longer than the lines left,
    # nor start beyond any real file (a sparse post-image is sized by it).
    left = len(lines) - i - 1
    if max(old_len, new_len) > left or max(old_start, new_start) > MAX_LINE:
        raise PatchError(f"{name}:{i + 1}: hunk of {fp.path} claims {max(old_len, new_len)} lines from line "
                         f"{max(old_start, new_start)}, but the patch has {left} lines left"
                         + (f" (and line numbers stop at {MAX_LINE})" if max(old_start, new_start) > MAX_LINE
                            else ""))
    hunk = Hunk(old_start, old_len, new_start, new_len, m.group(5).strip())
    fp.hunks.append(hunk)
    old_left, new_left = old_len, new_len
    new_no = new_start
    header = i + 1
    i += 1
    while (old_left > 0 or new_left > 0) and i < len(lines):
        line = lines[i]
        tag, body = (line[:1], line[1:]) if line else (" ", "")  # blank context lost to a mailer
        if tag == "\\":  # "\ No newline at end of file"
            i += 1
            continue
        if tag == " ":
            hunk.lines.append((" ", body, new_no))
            new_no += 1
            old_left -= 1
            new_left -= 1
        elif tag == "+":
            hunk.lines.append(("+", body, new_no))
            new_no += 1
            new_left -= 1
        elif tag == "-":
            hunk.lines.append(("-", body, None))
            old_left -= 1
        else:
            break
        i += 1
    if old_left > 0 or new_left > 0 or old_left < 0 or new_left < 0:
        raise PatchError(f"{name}:{header}: hunk of {fp.path} is truncated or its line counts are wrong "
                         f"(@@ -{old_start},{old_len} +{new_start},{new_len} @@)")
    while i < len(lines) and lines[i].startswith("\\"):
        i += 1
    return i


# A whole series of the refactor is ~100 KB; parsing costs ~0.3 s per MB (bench/hostile_bench.py).
MAX_PATCH_BYTES = 32 * 1024 * 1024


def read_patch_file(path: str, stdin: bytes | None = None) -> tuple[str, str]:
    """(text, name) of a patch file, or of `stdin` for "-".  A pipe (`<(git diff)`) is read
    like a file; a device such as /dev/zero, which would never end, a file over the limit and
    a binary file are refused.  Raises PatchError (one line, naming the file)."""
    if path == "-":
        data, name = stdin or b"", "<stdin>"
    else:
        name = path
        try:
            with open(path, "rb") as fh:
                mode = os.fstat(fh.fileno()).st_mode
                if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
                    raise PatchError(f"{name}: not a regular file or a pipe")
                data = fh.read(MAX_PATCH_BYTES + 1)
        except FileNotFoundError:
            raise PatchError(f"{path}: no such file or directory") from None
        except IsADirectoryError:
            raise PatchError(f"{path}: a directory, not a patch") from None
        except OSError as exc:
            raise PatchError(f"{path}: cannot read: {exc.strerror}") from None
    if len(data) > MAX_PATCH_BYTES:
        raise PatchError(f"{name}: larger than the {MAX_PATCH_BYTES // (1024 * 1024)} MiB limit for a patch")
    if b"\0" in data[:8192]:
        raise PatchError(f"{name}: binary file, not a patch")
    return data.decode("utf-8", "replace"), name

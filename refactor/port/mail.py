"""Patches as mails: split an mbox (or one diff) into messages with their headers.

A port keeps authorship, date, subject and message body of every patch, so it
needs more than the diff: the mail headers, the commit message and the
upstream sha (the mbox "From <sha>" line, or a "commit <sha> upstream." /
"[ Upstream commit <sha> ]" line already in the body).  The diff itself is
read by refactor.frontend.patch, which lint uses too.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from refactor.frontend.patch import Patch, PatchError, parse_patches

_MBOX_FROM = re.compile(r"From ([0-9a-f]{7,64}) \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}$")
_HEADER = re.compile(r"([A-Za-z][A-Za-z0-9-]*):[ \t]?(.*)")
_UPSTREAM = re.compile(r"^(?:commit ([0-9a-f]{12,40}) upstream\.|\[ Upstream commit ([0-9a-f]{12,40}) \])\s*$",
                       re.M)
_DIFF_START = re.compile(r"^(diff --git |--- \S|Index: )", re.M)
_NULL_SHA = "0" * 40


@dataclass
class Mail:
    """One patch: headers, message and diff (already parsed)."""

    source: str            # file name for messages
    line: int              # first line of this mail in the input
    author: str | None     # "Name <email>"
    date: str | None
    subject: str           # without the [PATCH ...] prefix
    body: str              # commit message body (no headers, no diff)
    upstream: str | None   # the sha this patch is in its own tree
    patch: Patch
    diff: str              # the diff text as given

    @property
    def label(self) -> str:
        return self.subject or f"{self.source}:{self.line}"


@dataclass
class _Raw:
    line: int
    sha: str | None = None
    lines: list[str] = field(default_factory=list)


def _split(text: str) -> list[_Raw]:
    raws: list[_Raw] = []
    cur: _Raw | None = None
    for n, line in enumerate(text.split("\n"), 1):
        m = _MBOX_FROM.match(line)
        if m:
            cur = _Raw(n, sha=m.group(1) if m.group(1) != _NULL_SHA else None)
            raws.append(cur)
            continue
        if cur is None:
            cur = _Raw(n)
            raws.append(cur)
        cur.lines.append(line)
    return raws


def _headers(lines: list[str]) -> tuple[dict[str, str], int]:
    """Mail headers (folded lines joined) and the index of the first body line."""
    headers: dict[str, str] = {}
    last = None
    for i, line in enumerate(lines):
        if not line.strip():
            return headers, i + 1
        if line[:1] in (" ", "\t") and last:
            headers[last] += " " + line.strip()
            continue
        m = _HEADER.match(line)
        if not m:
            return ({}, 0) if not headers else (headers, i)
        last = m.group(1).lower()
        headers.setdefault(last, m.group(2).strip())
    return headers, len(lines)


def _decoded(chunk: str) -> str:
    """The mail as git am reads it: a quoted-printable or base64 body (mail clients, raw
    messages saved from an archive) decoded, and the first text part of a multipart mail.
    Mails without a transfer encoding are returned as they are, so that line numbers in
    messages stay the input's."""
    headers, _at = _headers(chunk.split("\n"))
    encoding = headers.get("content-transfer-encoding", "").strip().lower()
    if encoding not in ("quoted-printable", "base64") and \
            not headers.get("content-type", "").strip().lower().startswith("multipart/"):
        return chunk
    import email
    import email.policy

    msg = email.message_from_string(chunk, policy=email.policy.default)
    part = msg.get_body(preferencelist=("plain",)) if msg.is_multipart() else msg
    try:
        body = part.get_content() if part is not None else ""
    except (LookupError, ValueError):
        return chunk               # an encoding Python cannot decode: read the text as given
    kept = [f"{k}: {v}" for k, v in headers.items()
            if k not in ("content-transfer-encoding", "content-type", "mime-version")]
    return "\n".join(kept) + "\n\n" + body


def _header_text(value: str | None) -> str | None:
    """An RFC 2047 encoded header (`=?UTF-8?q?J=C3=B6rg?=`) as text."""
    if not value or "=?" not in value:
        return value
    from email.header import decode_header, make_header

    try:
        return str(make_header(decode_header(value)))
    except (LookupError, ValueError, UnicodeDecodeError):
        return value


def read_mails(text: str, source: str = "<patch>") -> list[Mail]:
    """Every patch of `text`: a format-patch mail, an mbox of several, or a plain diff.

    Raises PatchError (one line, naming the input) when there is no patch.
    """
    text = text.replace("\r\n", "\n")
    mails: list[Mail] = []
    for raw in _split(text):
        chunk = _decoded("\n".join(raw.lines))
        m = _DIFF_START.search(chunk)
        if not m:
            continue
        head, diff = chunk[:m.start()], chunk[m.start():]
        headers, body_at = _headers(head.split("\n"))
        body_lines = head.split("\n")[body_at:] if headers else head.split("\n")
        body = "\n".join(body_lines)
        # format-patch puts the diffstat after a '---' line: the message ends there.
        cut = re.search(r"^---\s*$", body, re.M)
        if cut:
            body = body[:cut.start()]
        body = body.strip("\n")
        # Patches are re-parsed per mail so that line numbers in errors are the input's.
        try:
            patches = parse_patches(diff, source)
        except PatchError as exc:
            raise PatchError(f"{exc} (in the mail at {source}:{raw.line})") from None
        subject = re.sub(r"^\[[^\]]*\]\s*", "", _header_text(headers.get("subject")) or "").strip()
        up = _UPSTREAM.search(body)
        upstream = raw.sha
        if up:
            upstream = up.group(1) or up.group(2)
            body = _UPSTREAM.sub("", body, count=1).strip("\n")
        for patch in patches:
            mails.append(Mail(source=source, line=raw.line + patch.start_line - 1,
                              author=_header_text(headers.get("from")), date=headers.get("date"),
                              subject=subject or (patch.subject or ""), body=body, upstream=upstream,
                              patch=patch, diff=diff))
    if not mails:
        raise PatchError(f"{source}: not a patch (no unified diff: no '--- a/FILE' / '+++ b/FILE' / "
                         "'@@' lines)")
    return mails

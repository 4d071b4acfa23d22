"""The function a hunk of a patch is in, as git names it (its `@@` heading) and as its lines say."""
from __future__ import annotations

import re

from refactor.frontend.patch import Hunk
from refactor.port.prereq import C_WORDS as _C_WORDS

_FUNC_HEAD = re.compile(r"([A-Za-z_]\w*)\s*\(")


def heading(hunk: Hunk) -> str:
    """The line git would name the hunk's first change by: the nearest line above it that
    starts with a letter (a function's first line, mostly), else the `@@` heading."""
    last = hunk.section.strip()
    for tag, text, _ in hunk.lines:
        if tag != " ":
            break
        if text[:1].isalpha() or text[:1] == "_":
            last = text.strip()
    return last


def function_of(hunk: Hunk) -> str | None:
    # Lines after the first change may head the next definition (`EXPORT_SYMBOL_GPL(f);` after
    # a function's `}`): the change's own function is above it, or the `@@` heading names it.
    pre: list[str] = []
    k = None
    for tag, t, _ in hunk.lines:
        if tag != " " and k is None:
            k = len(pre) + (tag == "-")      # a removed line is the change's own
        if tag != "+":
            pre.append(t)
    k = len(pre) if k is None else k
    for text in pre[:k] + [hunk.section] + pre[k:]:
        if text and not text[0].isspace() and not text.startswith(("#", "/", "*", "}")):
            m = _FUNC_HEAD.search(text)
            if m and m.group(1) not in _C_WORDS:
                return m.group(1)
    return None

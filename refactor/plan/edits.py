"""Planned changes as data: what every consumer of a plan reads."""
from __future__ import annotations

from dataclasses import dataclass

DROP = "\x00drop\x00"  # stands for a dropped statement: its whole line goes


@dataclass
class Edit:
    """Replace bytes [start, end) of a file with `new`, because of `rule`."""

    file: str
    start: int
    end: int
    new: str
    rule: str
    why: str = ""
    old: str = ""
    line: int = 0


@dataclass
class Human:
    """A site the rules cannot decide: file:line and why."""

    file: str
    line: int
    why: str
    text: str = ""

"""Planned changes as data: what every consumer of a plan reads."""
from __future__ import annotations

from dataclasses import dataclass

DROP = "\x00drop\x00"  # stands for a dropped statement: its whole line goes


@dataclass
class Edit:
    """Replace bytes [start, end) of a file with `new`, because of `rules` (ids of the registry)."""

    file: str
    start: int
    end: int
    new: str
    rules: tuple[str, ...]
    why: str = ""
    old: str = ""
    line: int = 0

    def __post_init__(self) -> None:
        # One id (or the historic comma-joined string) is accepted from producers.
        if isinstance(self.rules, str):
            self.rules = tuple(r for r in self.rules.split(",") if r)
        else:
            self.rules = tuple(self.rules)

    @classmethod
    def span(cls, file: str, data: bytes, start: int, end: int, new: str, rules,
             why: str = "") -> "Edit":
        """Replace data[start:end] of `file`: the old text and line come from `data`."""
        return cls(file, start, end, new, rules, why, data[start:end].decode("utf-8", "replace"),
                   data.count(b"\n", 0, start) + 1)

    @property
    def rule(self) -> str:
        """The ids as one comma-joined string: the `rule` field of the JSON output."""
        return ",".join(self.rules)


@dataclass
class Human:
    """A site the rules cannot decide: file:line and why."""

    file: str
    line: int
    why: str
    text: str = ""


# A clearer name for what a Human is; Human stays for the code that uses it.
HumanSite = Human

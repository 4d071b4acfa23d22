"""The typed objects rules/ loads into (refactor.rules builds them; this module only defines them).

Each is a frozen dataclass.  The ones that replaced raw TOML tables (_Keyed) still
answer `obj["key"]` and `obj.get("key")`, so code written against the tables reads
them unchanged; their attributes are the typed interface.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields


class _Keyed(Mapping):
    """Read access by TOML key too (`rule["function"]`, `step.get("arg", 0)`), for code
    written against the raw tables; the attributes are the typed interface."""

    def _table(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "params"}
        out.update(getattr(self, "params", {}) or {})
        return out

    def __getitem__(self, key):
        return self._table()[key]

    def __iter__(self):
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())


@dataclass(frozen=True, eq=False)
class CallRule(_Keyed):
    """mappings.toml [[calls]]: a call whose function changes when its argument becomes a walker."""

    id: str
    function: str
    arg: int
    new: str
    why: str


@dataclass(frozen=True, eq=False)
class RestructureRule(_Keyed):
    """One entry of rules/restructure.toml: `kind` is its table ([[attach_walker]]...),
    the keys other than id/why are in `params` (some, such as `from`, are Python keywords)."""

    kind: str
    id: str
    why: str = ""
    params: Mapping = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class NewMember(_Keyed):
    """layout.toml [vcpu_arch.new.<role>]: a member the new layout adds to struct kvm_vcpu_arch."""

    role: str
    type: str
    replaces: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class NewField(_Keyed):
    """layout.toml [new_fields.<name>]: a field only the new layout has (so scans of 7.3+ find it)."""

    name: str
    struct: str  # the structs that have it, space-separated
    type: str
    why: str = ""


@dataclass(frozen=True)
class WalkerNames:
    """The C identifiers bound to the walker roles ({gva}, {ngpa})."""

    gva: str
    ngpa: str
    preset: str | None = None

    def as_dict(self) -> dict[str, str]:
        return {"gva": self.gva, "ngpa": self.ngpa}

    def fill(self, template: str, **extra: str) -> str:
        """`template` with {gva}/{ngpa} (and any `extra` key) replaced; other braces stay."""
        for key, value in {**self.as_dict(), **extra}.items():
            template = template.replace("{" + key + "}", value)
        return template


@dataclass(frozen=True)
class MmuField:
    name: str
    dest: str  # "walker" or "mmu"
    path: str
    why: str = ""

    @property
    def moves_to_walker(self) -> bool:
        return self.dest == "walker"


@dataclass(frozen=True)
class Base:
    """What an old MMU-context expression becomes when used as a walker."""

    id: str
    old: str
    new: str
    new_is: str  # "ptr" or "obj"
    why: str
    known_guest_mmu: str | None = None

    @property
    def generic(self) -> bool:
        return self.old == "{base}"


@dataclass(frozen=True)
class ExprRule:
    id: str
    old: str
    new: str
    why: str


@dataclass(frozen=True)
class VcpuMember:
    name: str
    kind: str
    removed: bool = False
    walker: str | None = None  # role of the walker it stands for, if any
    targets: tuple[str, ...] = ()
    compare_as_walker: bool = False
    as_builder: str | None = None  # mappings.toml rule for it where a struct kvm_mmu * is required

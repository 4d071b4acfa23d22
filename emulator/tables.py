"""Build guest page tables as trace `write` events (all paging formats, EPT, NPT).

Used by the scenario library, the random generator and the access.c-style
test.  Tables may live in L2's physical space: `to_l1` maps a table address
to the L1 GPA where the generator has to write it (through its own EPT/NPT).
"""
from __future__ import annotations

from typing import Callable

from .consts import EPT_R, EPT_W, EPT_X, PT_P, PT_PS, PT_RW, PT_US

EPT_WB = 6 << 3          # write-back memory type for EPT leaves
SIZES = {4096: 1, 2 << 20: 2, 4 << 20: 2, 1 << 30: 3}


class PageAllocator:
    """Bump allocator of 4 KiB table pages in a physical range."""

    def __init__(self, base: int, limit: int):
        self.next = base
        self.limit = limit

    def __call__(self) -> int:
        if self.next >= self.limit:
            raise RuntimeError("page-table pool exhausted")
        page = self.next
        self.next += 4096
        return page


class Tables:
    """One set of paging structures: fmt is 32, pae, 64 (4-level), la57, ept."""

    def __init__(self, fmt: str, alloc: Callable[[], int], emit: Callable[[dict], None],
                 to_l1: Callable[[int], int] = lambda a: a):
        self.fmt = fmt
        self.alloc = alloc
        self.emit = emit
        self.to_l1 = to_l1
        self.entries: dict[int, int] = {}           # L1 address -> entry value
        self.tables: dict[tuple[int, int], int] = {}  # (level, va prefix) -> table address
        if fmt == "pae":
            page = alloc()
            self.root = page + 0x20                 # a 32-byte aligned PDPT inside a page
        else:
            self.root = alloc()
        self.top = {"32": 2, "pae": 3, "64": 4, "la57": 5, "ept": 4}[fmt]
        self.esize = 4 if fmt == "32" else 8
        self.bits = 10 if fmt == "32" else 9

    def cr3(self) -> int:
        return self.root

    def eptp(self, ad: bool = False) -> int:
        return self.root | 6 | (3 << 3) | ((1 << 6) if ad else 0)

    def _index(self, va: int, level: int) -> int:
        return (va >> (12 + (level - 1) * self.bits)) & ((1 << self.bits) - 1)

    def nonleaf_flags(self) -> int:
        if self.fmt == "ept":
            return EPT_R | EPT_W | EPT_X
        return PT_P | PT_RW | PT_US

    def entry_addr(self, va: int, level: int) -> int | None:
        """L1 address of the entry mapping `va` at `level`, if its table exists."""
        if level == self.top:
            table = self.root
        else:
            table = self.tables.get((level, va >> self._shift(level + 1)))
        if table is None:
            return None
        return self.to_l1(table + self._index(va, level) * self.esize)

    def _shift(self, level: int) -> int:
        return 12 + (level - 1) * self.bits

    def write_entry(self, addr_l1: int, value: int) -> None:
        self.entries[addr_l1] = value
        self.emit({"ev": "write", "addr": addr_l1, "val": value, "size": self.esize})

    def map(self, va: int, pa: int, size: int = 4096, flags: int | None = None,
            upper: dict[int, int] | None = None) -> None:
        """Map va -> pa.  flags: leaf bits (default P|RW|US, EPT: RWX|WB);
        upper: per-level flags for the non-leaf entries created or rewritten."""
        leaf = SIZES[size]
        if flags is None:
            flags = (EPT_R | EPT_W | EPT_X) if self.fmt == "ept" else (PT_P | PT_RW | PT_US)
        if self.fmt == "ept":
            flags |= EPT_WB
        upper = upper or {}
        table = self.root
        for level in range(self.top, leaf, -1):
            addr = self.to_l1(table + self._index(va, level) * self.esize)
            key = (level - 1, va >> self._shift(level))
            child = self.tables.get(key)
            if child is None:
                child = self.alloc()
                self.tables[key] = child
            if self.fmt == "pae" and level == 3:
                value = child | PT_P               # PDPTEs have no rights bits
            else:
                value = child | upper.get(level, self.nonleaf_flags())
            if self.entries.get(addr) != value:
                self.write_entry(addr, value)
            table = child
        if self.fmt == "32" and size == 4 << 20:
            pa = (pa & 0xFFC00000) | (((pa >> 32) & 0xFF) << 13)   # PSE-36
        value = pa | flags
        if leaf > 1:
            value |= PT_PS
        self.write_entry(self.to_l1(table + self._index(va, leaf) * self.esize), value)

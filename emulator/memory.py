"""Guest physical memory (L1 GPA space), sparse, as aligned 64-bit words.

Page tables are the only thing the model reads, so an 8-byte-word dict is
both the fastest and the smallest representation.  Unwritten memory reads
as zero.  Each layout gets its own copy so that accessed/dirty write-backs
of one model cannot hide a missing write-back in the other.
"""
from __future__ import annotations

MASK64 = (1 << 64) - 1


class GuestMemory:
    __slots__ = ("words", "log")

    def __init__(self) -> None:
        self.words: dict[int, int] = {}
        self.log: list[tuple[int, int]] = []   # A/D write-backs of the current event

    def read64(self, addr: int) -> int:
        return self.words.get(addr & ~7, 0)

    def read32(self, addr: int) -> int:
        return (self.words.get(addr & ~7, 0) >> ((addr & 4) * 8)) & 0xFFFFFFFF

    def write(self, addr: int, value: int, size: int = 8) -> None:
        if size == 8:
            self.words[addr & ~7] = value & MASK64
        else:
            shift = (addr & 4) * 8
            old = self.words.get(addr & ~7, 0)
            self.words[addr & ~7] = (old & ~(0xFFFFFFFF << shift)) | ((value & 0xFFFFFFFF) << shift)

    def set_bits(self, addr: int, bits: int, size: int) -> None:
        """Atomic OR of A/D bits into an entry (logged: the write-back is a result)."""
        base = addr & ~7
        shift = (addr & 4) * 8 if size == 4 else 0
        old = self.words.get(base, 0)
        new = old | (bits << shift)
        if new != old:
            self.words[base] = new
            self.log.append((addr, (new ^ old) >> shift))   # only the bits newly set

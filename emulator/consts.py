"""Architectural and KVM constants shared by the walker and the plumbing."""

# Page-fault error code bits (SDM 4.7) and KVM's software-only extensions.
PFERR_PRESENT = 1 << 0
PFERR_WRITE = 1 << 1
PFERR_USER = 1 << 2
PFERR_RSVD = 1 << 3
PFERR_FETCH = 1 << 4
PFERR_PK = 1 << 5
PFERR_GUEST_FINAL = 1 << 32     # nested fault on the final GPA (AMD exit_info_1 bit 32)
PFERR_GUEST_PAGE = 1 << 33      # nested fault while reading a guest page table
PFERR_IMPLICIT = 1 << 48        # implicit supervisor access: SMAP ignores EFLAGS.AC
PFERR_ACCESS_BITS = PFERR_PRESENT | PFERR_WRITE | PFERR_USER | PFERR_FETCH

# KVM's ACC_* encoding of the rights accumulated over a walk.  For EPT, read
# permission is carried in ACC_USER (KVM does the same).
ACC_EXEC = 1
ACC_WRITE = 2
ACC_USER = 4
ACC_ALL = 7

CR0_PE = 1 << 0
CR0_WP = 1 << 16
CR0_PG = 1 << 31
CR4_PSE = 1 << 4
CR4_PAE = 1 << 5
CR4_LA57 = 1 << 12
CR4_SMEP = 1 << 20
CR4_SMAP = 1 << 21
CR4_PKE = 1 << 22
EFER_LME = 1 << 8
EFER_LMA = 1 << 10
EFER_NXE = 1 << 11

# Guest page-table entry bits (32-bit, PAE and 4/5-level formats).
PT_P = 1 << 0
PT_RW = 1 << 1
PT_US = 1 << 2
PT_A = 1 << 5
PT_D = 1 << 6
PT_PS = 1 << 7
PT_NX = 1 << 63

# EPT entry bits.
EPT_R = 1 << 0
EPT_W = 1 << 1
EPT_X = 1 << 2
EPT_A = 1 << 8
EPT_D = 1 << 9

# EPT violation exit qualification (SDM 28.3.3.2 / 27.2.1).
EPTQ_READ = 1 << 0
EPTQ_WRITE = 1 << 1
EPTQ_FETCH = 1 << 2
EPTQ_GVA_VALID = 1 << 7
EPTQ_GVA_TRANSLATED = 1 << 8

PF_VECTOR = 14
INVALID_GPA = -1


def rsvd_bits(lo: int, hi: int) -> int:
    """Mask of bits lo..hi inclusive (empty when hi < lo)."""
    if hi < lo:
        return 0
    return ((1 << (hi - lo + 1)) - 1) << lo

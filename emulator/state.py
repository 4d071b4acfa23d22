"""The vCPU state the plumbing works on, shaped by rules/layout.toml.

struct kvm_mmu, struct kvm_pagewalk and struct kvm_vcpu_arch are built as
slotted classes whose members are read from the rules: the old kvm_mmu has
every field in [mmu_fields]; in the new layout a field lives in the walker or
in kvm_mmu according to its `dest`/`path`, and the walker members of
kvm_vcpu_arch get the preset's names.  A rule that sends a field to the wrong
struct therefore fails at run time in the derived model instead of passing.
"""
from __future__ import annotations

from refactor.rules import Rules, WalkerNames

from .formats import CpuRole, PageFormat
from .memory import GuestMemory


class Nested:
    """vmcs12/vmcb12 state that the MMU code reads, plus L1's saved registers."""

    __slots__ = ("vendor", "tdp", "root", "ad", "execonly", "pf_intercept", "l1_regs",
                 "l1_cr4", "l1_efer")

    def __init__(self) -> None:
        self.vendor = "vmx"
        self.tdp = False
        self.root = 0
        self.ad = False
        self.execonly = True
        self.pf_intercept = False
        self.l1_regs = None
        self.l1_cr4 = 0
        self.l1_efer = 0


class Vcpu:
    """struct kvm_vcpu with the registers the MMU reads (of the running level)."""

    __slots__ = ("arch", "mem", "cr0", "cr3", "cr4", "efer", "cpl", "rflags_ac", "pkru",
                 "pdptrs", "guest_mode", "tdp_enabled", "maxphy", "nested", "delivered", "notes")

    def __init__(self, arch, tdp_enabled: bool, maxphy: int) -> None:
        self.arch = arch
        self.mem = GuestMemory()
        self.cr0 = self.cr3 = self.cr4 = self.efer = 0
        self.cpl = 0
        self.rflags_ac = False
        self.pkru = 0
        self.pdptrs = [0, 0, 0, 0]
        self.guest_mode = False
        self.tdp_enabled = tdp_enabled
        self.maxphy = maxphy
        self.nested = Nested()
        self.delivered = None      # where the last injected fault went
        self.notes: list = []      # side effects KVM would perform (TLB flushes, #GP)


def _new_format() -> PageFormat:
    return PageFormat()


def _init_struct(obj, defaults: dict) -> None:
    for name in obj.__slots__:
        factory = defaults.get(name)
        setattr(obj, name, factory() if callable(factory) else factory)


# Initial values by member name; anything else starts as None.
_DEFAULTS = {
    "cpu_role": lambda: CpuRole(level=-1),   # matches no real role: first init always runs
    "root_role": lambda: None,
    "guest_rsvd_check": _new_format,
    "shadow_zero_check": _new_format,
    "fmt": _new_format,
    "permissions": lambda: [0] * 16,
    "pkru_mask": 0,
    "pdptrs": lambda: [0, 0, 0, 0],
    "prev_roots": lambda: [],
}


_CLASSES: dict = {}


def struct_classes(rules: Rules, layout: str) -> tuple[type, type | None, list[str]]:
    """(kvm_mmu class, kvm_pagewalk class or None, kvm_mmu members of kvm_vcpu_arch)."""
    key = (id(rules), layout)
    hit = _CLASSES.get(key)
    if hit is not None and hit[0] is rules:
        return hit[1]
    made = _make_classes(rules, layout)
    _CLASSES[key] = (rules, made)
    return made


def _make_classes(rules: Rules, layout: str):
    if layout == "old":
        mmu_members = sorted(rules.mmu_fields)
        walker_members = None
    else:
        mmu_members = sorted({f.path.split(".")[0] for f in rules.mmu_fields.values()
                              if not f.moves_to_walker}
                             | {n for n, v in rules.new_fields.items()
                                if rules.types["mmu"] in v.get("struct", "").split()})
        walker_members = sorted({f.path.split(".")[0] for f in rules.mmu_fields.values()
                                 if f.moves_to_walker})
    mmu_cls = type("kvm_mmu", (), {"__slots__": tuple(mmu_members)})
    walker_cls = (type("kvm_pagewalk", (), {"__slots__": tuple(walker_members)})
                  if walker_members is not None else None)
    members = [n for n, m in rules.vcpu_old.items() if m.kind in ("mmu", "walk_only_mmu")]
    return mmu_cls, walker_cls, members


class Arch:
    """struct kvm_vcpu_arch: members are set per layout (no fixed slots)."""


def make_vcpu(rules: Rules, layout: str, names: WalkerNames | None, tdp_enabled: bool,
              maxphy: int) -> Vcpu:
    mmu_cls, walker_cls, members = struct_classes(rules, layout)
    arch = Arch()
    if layout == "old":
        for name in members:
            mmu = mmu_cls()
            _init_struct(mmu, _DEFAULTS)
            setattr(arch, name, mmu)
        arch.mmu = None
        arch.walk_mmu = None
    else:
        roles = names.as_dict()
        for role in rules.vcpu_new:
            w = walker_cls()
            _init_struct(w, _DEFAULTS)
            setattr(arch, roles[role], w)
        for name in members:
            member = rules.vcpu_old[name]
            if member.removed:
                continue
            mmu = mmu_cls()
            _init_struct(mmu, _DEFAULTS)
            if "w" in mmu_cls.__slots__:
                # __kvm_mmu_create(vcpu, mmu, walker): the walker comes from the layout.
                mmu.w = getattr(arch, roles[member.walker])
            setattr(arch, name, mmu)
        arch.mmu = None
    return Vcpu(arch, tdp_enabled, maxphy)

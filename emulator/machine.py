"""Apply trace events to one layout's model and report each event's result.

The register-level glue here (CR writes, nested entry/exit, the emulator's
translation entry points) is the same for both layouts; every MMU decision
is made by the plumbing module it is given: kvm_old or its derived twin.
"""
from __future__ import annotations

import time
import types

from refactor.rules import Rules, WalkerNames

from . import kvm_old
from .consts import CR0_PG, CR0_WP, CR4_PAE, EFER_LMA
from .derive import derived_model
from .paging import Fault
from .state import make_vcpu

CR4_PDPTR_BITS = kvm_old.CR4_PDPTR_BITS
ACCESSES = ("read", "write", "fetch", "system", "implicit", "implicit_write",
            "l2gpa_read", "l2gpa_write")


class Model:
    """One layout: a plumbing module plus the vCPU state it works on."""

    def __init__(self, kvm: types.ModuleType, rules: Rules, layout: str,
                 names: WalkerNames | None):
        self.kvm = kvm
        self.rules = rules
        self.layout = layout
        self.names = names
        self.vcpu = None
        self.translate_time = 0.0
        self.translations = 0

    def apply(self, ev: dict) -> dict:
        try:
            result = self._apply(ev)
        except Exception as exc:   # a broken model is a result, not a crash
            return {"error": f"{type(exc).__name__}: {exc}"}
        vcpu = self.vcpu
        if vcpu.notes:
            result["notes"] = vcpu.notes
            vcpu.notes = []
        if vcpu.mem.log:
            result["ad"] = vcpu.mem.log
            vcpu.mem.log = []
        return result

    def _apply(self, ev: dict) -> dict:
        kind = ev["ev"]
        kvm = self.kvm
        if kind == "reset":
            self.vcpu = make_vcpu(self.rules, self.layout, self.names, ev.get("tdp", True),
                                  ev.get("maxphyaddr", 46))
            kvm.kvm_mmu_create(self.vcpu)
            kvm.kvm_init_mmu(self.vcpu)
            return {"ok": True}
        vcpu = self.vcpu
        if vcpu is None:
            raise RuntimeError("event before reset")
        if kind == "translate":
            t0 = time.perf_counter()
            out = self._translate(vcpu, ev["access"], ev["addr"])
            self.translate_time += time.perf_counter() - t0
            self.translations += 1
            return out
        if kind == "write":
            vcpu.mem.write(ev["addr"], ev["val"], ev.get("size", 8))
            return {"ok": True}
        if kind == "read":
            return {"val": vcpu.mem.read64(ev["addr"]) if ev.get("size", 8) == 8
                    else vcpu.mem.read32(ev["addr"])}
        if kind == "cr0":
            return set_cr0(kvm, vcpu, ev["val"], ev.get("passthrough", False))
        if kind == "cr3":
            return set_cr3(kvm, vcpu, ev["val"])
        if kind == "cr4":
            return set_cr4(kvm, vcpu, ev["val"])
        if kind == "efer":
            old = vcpu.efer
            vcpu.efer = ev["val"]
            if (old ^ vcpu.efer) & ~0xFF:
                kvm.kvm_mmu_reset_context(vcpu)
            return {"ok": True}
        if kind == "cpl":
            vcpu.cpl = ev["val"]
            return {"ok": True}
        if kind == "ac":
            vcpu.rflags_ac = bool(ev["val"])
            return {"ok": True}
        if kind == "pkru":
            vcpu.pkru = ev["val"]
            return {"ok": True}
        if kind == "invlpg":
            kvm.kvm_mmu_invlpg(vcpu, ev["addr"])
            return {"ok": True}
        if kind == "reset_context":
            kvm.kvm_mmu_reset_context(vcpu)
            return {"ok": True}
        if kind == "nested_entry":
            return nested_entry(kvm, vcpu, ev)
        if kind == "nested_exit":
            return nested_exit(kvm, vcpu)
        raise ValueError(f"unknown event {kind!r}")

    def _translate(self, vcpu, access: str, addr: int) -> dict:
        kvm = self.kvm
        if access == "read":
            r = kvm.kvm_mmu_gva_to_gpa_read(vcpu, addr)
        elif access == "write":
            r = kvm.kvm_mmu_gva_to_gpa_write(vcpu, addr)
        elif access == "fetch":
            r = kvm.kvm_fetch_guest_virt(vcpu, addr)
        elif access == "system":
            r = kvm.kvm_mmu_gva_to_gpa_system(vcpu, addr)
        elif access == "implicit":
            r = kvm.kvm_mmu_gva_to_gpa_implicit(vcpu, addr, False)
        elif access == "implicit_write":
            r = kvm.kvm_mmu_gva_to_gpa_implicit(vcpu, addr, True)
        elif access == "l2gpa_read":
            r = kvm.kvm_translate_l2_gpa(vcpu, addr, False)
        else:
            r = kvm.kvm_translate_l2_gpa(vcpu, addr, True)
        if r.__class__ is Fault:
            vcpu.delivered = None
            kvm.kvm_inject_emulated_page_fault(vcpu, r)
            return {"fault": vcpu.delivered}
        return {"gpa": r}


def set_cr0(kvm, vcpu, cr0: int, passthrough: bool) -> dict:
    """kvm_set_cr0() + kvm_post_set_cr0(); `passthrough`: a guest-owned CR0.WP write
    that does not exit (TDP), so KVM learns of it only on its next walk."""
    old = vcpu.cr0
    if passthrough:
        if (old ^ cr0) & ~CR0_WP or not vcpu.tdp_enabled:
            raise ValueError("passthrough CR0 writes may only change CR0.WP, with TDP")
        vcpu.cr0 = cr0
        return {"ok": True}
    if (not old & CR0_PG and cr0 & CR0_PG and vcpu.cr4 & CR4_PAE and not vcpu.efer & EFER_LMA
            and not kvm.load_pdptrs(vcpu, vcpu.cr3)):
        return {"ok": False, "gp": True}
    vcpu.cr0 = cr0
    if (cr0 ^ old) == CR0_WP:
        if not cr0 & CR0_PG:
            return {"ok": True}
        if vcpu.tdp_enabled:
            kvm.kvm_init_mmu(vcpu)
            return {"ok": True}
    if (cr0 ^ old) & (CR0_PG | CR0_WP):
        kvm.kvm_mmu_reset_context(vcpu)
    return {"ok": True}


def set_cr3(kvm, vcpu, cr3: int) -> dict:
    if kvm.is_pae_paging(vcpu) and not kvm.load_pdptrs(vcpu, cr3):
        return {"ok": False, "gp": True}
    vcpu.cr3 = cr3
    return {"ok": True}


def set_cr4(kvm, vcpu, cr4: int) -> dict:
    old = vcpu.cr4
    if (vcpu.cr0 & CR0_PG and not vcpu.efer & EFER_LMA and cr4 & CR4_PAE
            and (cr4 ^ old) & CR4_PDPTR_BITS):
        saved, vcpu.cr4 = vcpu.cr4, cr4
        ok = kvm.load_pdptrs(vcpu, vcpu.cr3)
        vcpu.cr4 = saved
        if not ok:
            return {"ok": False, "gp": True}
    vcpu.cr4 = cr4
    if cr4 != old:
        kvm.kvm_mmu_reset_context(vcpu)
    return {"ok": True}


def nested_entry(kvm, vcpu, ev: dict) -> dict:
    """VMLAUNCH/VMRUN as far as the MMU sees it (prepare_vmcs02 / enter_svm_guest_mode)."""
    if vcpu.guest_mode:
        raise ValueError("nested_entry while L2 runs")
    n = vcpu.nested
    n.vendor = ev.get("vendor", "vmx")
    n.tdp = bool(ev.get("tdp", False)) and vcpu.tdp_enabled
    n.root = ev.get("root", 0)
    n.ad = bool(ev.get("ad", False))
    n.execonly = bool(ev.get("execonly", True))
    n.pf_intercept = bool(ev.get("pf_intercept", False))
    n.l1_regs = (vcpu.cr0, vcpu.cr3, vcpu.cr4, vcpu.efer, vcpu.cpl, list(vcpu.pdptrs))
    n.l1_cr4, n.l1_efer = vcpu.cr4, vcpu.efer
    vcpu.guest_mode = True
    if n.tdp:
        if n.vendor == "vmx":
            kvm.nested_ept_init_mmu_context(vcpu)
        else:
            kvm.nested_svm_init_mmu_context(vcpu)
    vcpu.cr0, vcpu.cr3, vcpu.cr4, vcpu.efer = ev["cr0"], ev["cr3"], ev["cr4"], ev["efer"]
    vcpu.cpl = ev.get("cpl", 0)
    kvm.kvm_mmu_reset_context(vcpu)
    if kvm.is_pae_paging(vcpu) and not kvm.load_pdptrs(vcpu, vcpu.cr3):
        return {"ok": True, "pdptrs": False}
    return {"ok": True}


def nested_exit(kvm, vcpu) -> dict:
    if not vcpu.guest_mode:
        raise ValueError("nested_exit while L1 runs")
    n = vcpu.nested
    if n.tdp:
        if n.vendor == "vmx":
            kvm.nested_ept_uninit_mmu_context(vcpu)
        else:
            kvm.nested_svm_uninit_mmu_context(vcpu)
    vcpu.guest_mode = False
    vcpu.cr0, vcpu.cr3, vcpu.cr4, vcpu.efer, vcpu.cpl, vcpu.pdptrs = n.l1_regs
    n.tdp = False
    kvm.kvm_mmu_reset_context(vcpu)
    return {"ok": True}


def old_model(rules: Rules) -> Model:
    return Model(kvm_old, rules, "old", None)


def new_model(rules: Rules, names: WalkerNames, module: types.ModuleType | None = None) -> Model:
    return Model(module or derived_model(rules, names), rules, "new", names)

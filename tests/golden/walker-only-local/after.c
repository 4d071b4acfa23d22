// SPDX-License-Identifier: GPL-2.0
/* A local MMU pointer used only to reach its walker becomes the walker. */
#include <linux/kvm_host.h>

void kvm_mmu_invalidate_addr(struct kvm_vcpu *vcpu, struct kvm_pagewalk *w,
			     u64 addr, unsigned long roots)
{
	struct kvm_mmu *mmu;

	if (w == &vcpu->arch.gva_walk) {
		addr = 0;

		mmu = &vcpu->arch.root_mmu;
	} else {
		mmu = &vcpu->arch.guest_mmu;
	}

	if (!mmu->sync_spte)
		return;
}

void inject_emulated_page_fault(struct kvm_vcpu *vcpu, struct x86_exception *fault, bool nested)
{
	struct kvm_pagewalk *fault_walk;

	fault_walk = nested ? vcpu->arch.mmu->w :
				 &vcpu->arch.gva_walk;

	kvm_mmu_invalidate_addr(vcpu, fault_walk, 0, 1);
	fault_walk->inject_page_fault(vcpu, fault, false);
}

/* Written through only (the walker's fields, not the pointer): the local is the walker. */
static void set_callbacks(struct kvm_vcpu *vcpu)
{
	struct kvm_pagewalk *gva_walk = &vcpu->arch.gva_walk;

	gva_walk->get_pdptr         = kvm_pdptr_read;
	gva_walk->inject_page_fault = kvm_inject_page_fault;
}

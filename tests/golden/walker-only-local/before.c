// SPDX-License-Identifier: GPL-2.0
/* A local MMU pointer used only to reach its walker becomes the walker. */
#include <linux/kvm_host.h>

void kvm_mmu_invalidate_addr(struct kvm_vcpu *vcpu, struct kvm_mmu *mmu,
			     u64 addr, unsigned long roots)
{
	if (mmu != &vcpu->arch.guest_mmu) {
		addr = 0;
	}

	if (!mmu->sync_spte)
		return;
}

void inject_emulated_page_fault(struct kvm_vcpu *vcpu, struct x86_exception *fault, bool nested)
{
	struct kvm_mmu *fault_mmu;

	fault_mmu = nested ? vcpu->arch.mmu :
				&vcpu->arch.root_mmu;

	kvm_mmu_invalidate_addr(vcpu, fault_mmu, 0, 1);
	fault_mmu->inject_page_fault(vcpu, fault, false);
}

/* Written through only (the walker's fields, not the pointer): the local is the walker. */
static void set_callbacks(struct kvm_vcpu *vcpu)
{
	struct kvm_mmu *context = &vcpu->arch.root_mmu;

	context->get_pdptr         = kvm_pdptr_read;
	context->inject_page_fault = kvm_inject_page_fault;
}

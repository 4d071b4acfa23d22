// SPDX-License-Identifier: GPL-2.0
/* A function that tells its MMUs apart takes the walker; callers pass their MMU's walker. */
#include <linux/kvm_host.h>

void flush_tlb_gva(struct kvm_vcpu *vcpu, u64 addr);
void invalidate_root(struct kvm_vcpu *vcpu, struct kvm_mmu *mmu, u64 addr, hpa_t root);

void kvm_mmu_invalidate_addr(struct kvm_vcpu *vcpu, struct kvm_pagewalk *w,
			     u64 addr, unsigned long roots)
{
	struct kvm_mmu *mmu;
	int i;

	/* It's actually a GPA for vcpu->arch.guest_mmu.  */
	if (w == &vcpu->arch.gva_walk) {
		flush_tlb_gva(vcpu, addr);

		mmu = &vcpu->arch.root_mmu;
	} else {
		mmu = &vcpu->arch.guest_mmu;
	}

	if (!mmu->sync_spte)
		return;

	for (i = 0; i < 3; i++)
		if (roots & (1ul << i))
			invalidate_root(vcpu, mmu, addr, mmu->prev_roots[i].hpa);
}

void kvm_mmu_invlpg(struct kvm_vcpu *vcpu, gva_t gva)
{
	kvm_mmu_invalidate_addr(vcpu, &vcpu->arch.gva_walk, gva, 7);
}

void nested_ept_invalidate_addr(struct kvm_vcpu *vcpu, gpa_t addr)
{
	kvm_mmu_invalidate_addr(vcpu, &vcpu->arch.ngpa_walk, addr, 7);
}

/* A GVA is the running level's: the walker is the GVA walker, whatever the MMU. */
void kvm_mmu_invpcid_gva(struct kvm_vcpu *vcpu, gva_t gva)
{
	struct kvm_mmu *mmu = vcpu->arch.mmu;

	if (mmu->prev_roots[0].hpa)
		kvm_mmu_invalidate_addr(vcpu, &vcpu->arch.gva_walk, gva, 2);
}

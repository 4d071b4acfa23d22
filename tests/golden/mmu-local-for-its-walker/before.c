// SPDX-License-Identifier: GPL-2.0
/* An MMU local needed as an MMU once, otherwise for its walker, gives way to a
 * walker local; the one MMU use names the MMU.  An MMU local read as an MMU stays,
 * and so does one whose walker another local holds already (load_pdptrs here). */
#include <linux/kvm_host.h>

#define KVM_MMU_ROOT_CURRENT	1

void kvm_mmu_free_roots(struct kvm *kvm, struct kvm_mmu *mmu, unsigned long roots_to_free);
struct kvm *vcpu_kvm(struct kvm_vcpu *vcpu);

int load_pdptrs(struct kvm_vcpu *vcpu, unsigned long cr3)
{
	struct kvm_mmu *mmu = vcpu->arch.walk_mmu;
	u64 pdpte;

	pdpte = mmu->get_pdptr(vcpu, 0);
	if (pdpte != cr3)
		kvm_mmu_free_roots(vcpu_kvm(vcpu), mmu, KVM_MMU_ROOT_CURRENT);
	return 1;
}

static u64 read_pdptr(struct kvm_vcpu *vcpu, struct kvm_mmu *mmu, int index)
{
	return mmu->get_pdptr(vcpu, index);
}

int reload_pdptrs(struct kvm_vcpu *vcpu, unsigned long cr3)
{
	struct kvm_mmu *mmu = vcpu->arch.walk_mmu;

	if (read_pdptr(vcpu, mmu, 0) != cr3)
		kvm_mmu_free_roots(vcpu_kvm(vcpu), mmu, KVM_MMU_ROOT_CURRENT);
	return 1;
}

int root_level(struct kvm_vcpu *vcpu)
{
	struct kvm_mmu *context = &vcpu->arch.root_mmu;

	kvm_mmu_free_roots(vcpu_kvm(vcpu), context, KVM_MMU_ROOT_CURRENT);
	return context->root_role.level;
}

// SPDX-License-Identifier: GPL-2.0
/* The function that creates an MMU takes the walker to attach, and its callers pass it. */
#include <linux/kvm_host.h>

static int __kvm_mmu_create(struct kvm_vcpu *vcpu, struct kvm_mmu *mmu, struct kvm_pagewalk *w)
{
	mmu->w = w;

	mmu->root.hpa = 0;
	mmu->pae_root = NULL;
	return 0;
}

int kvm_mmu_create(struct kvm_vcpu *vcpu)
{
	int ret;

	ret = __kvm_mmu_create(vcpu, &vcpu->arch.guest_mmu, &vcpu->arch.ngpa_walk);
	if (ret)
		return ret;

	return __kvm_mmu_create(vcpu, &vcpu->arch.root_mmu, &vcpu->arch.gva_walk);
}

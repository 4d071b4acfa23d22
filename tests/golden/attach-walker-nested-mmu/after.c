// SPDX-License-Identifier: GPL-2.0
/* While nested_mmu exists (before the step that removes it), it is attached to the GVA walker. */
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

	ret = __kvm_mmu_create(vcpu, &vcpu->arch.root_mmu, &vcpu->arch.gva_walk);
	vcpu->arch.nested_mmu.w = &vcpu->arch.gva_walk;
	return ret;
}

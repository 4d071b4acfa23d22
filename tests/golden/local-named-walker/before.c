// SPDX-License-Identifier: GPL-2.0
/* A local that holds one of the vCPU's named walkers is called by its name. */
#include <linux/kvm_host.h>

gpa_t translate(struct kvm_vcpu *vcpu, gva_t gva)
{
	struct kvm_mmu *mmu = vcpu->arch.walk_mmu;

	if (!vcpu->arch.walk_mmu->cpu_role.base.level)
		return gva;
	return mmu->gva_to_gpa(vcpu, mmu, gva, 0, NULL);
}

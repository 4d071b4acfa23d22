// SPDX-License-Identifier: GPL-2.0
/* A local that holds one of the vCPU's named walkers is called by its name. */
#include <linux/kvm_host.h>

gpa_t translate(struct kvm_vcpu *vcpu, gva_t gva)
{
	struct kvm_pagewalk *gva_walk = &vcpu->arch.gva_walk;

	if (!gva_walk->cpu_role.base.level)
		return gva;
	return gva_walk->gva_to_gpa(vcpu, gva_walk, gva, 0, NULL);
}

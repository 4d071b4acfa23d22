// SPDX-License-Identifier: GPL-2.0
/* nested_mmu, only ever walked, is the GVA walker itself. */
#include <linux/kvm_host.h>

unsigned int l2_paging_level(struct kvm_vcpu *vcpu)
{
	return vcpu->arch.gva_walk.cpu_role.base.level;
}

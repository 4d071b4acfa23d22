// SPDX-License-Identifier: GPL-2.0
/* A walker field of root_mmu is its walker's: root_mmu.w == &gva_walk. */
#include <linux/kvm_host.h>

bool pkeys_checked(struct kvm_vcpu *vcpu)
{
	return vcpu->arch.gva_walk.fmt.pkru_mask != 0;
}

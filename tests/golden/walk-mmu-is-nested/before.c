// SPDX-License-Identifier: GPL-2.0
/* walk_mmu pointed at nested_mmu exactly while the fault MMU was guest_mmu. */
#include <linux/kvm_host.h>

bool l2_walks_with_tdp(struct kvm_vcpu *vcpu)
{
	return vcpu->arch.walk_mmu == &vcpu->arch.nested_mmu;
}

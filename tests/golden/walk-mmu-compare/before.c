// SPDX-License-Identifier: GPL-2.0
/* The nested-fault test compares walkers. */
#include <linux/kvm_host.h>

bool fault_is_nested(struct kvm_vcpu *vcpu, struct kvm_mmu *mmu)
{
	return mmu != vcpu->arch.walk_mmu && mmu->cpu_role.base.level;
}

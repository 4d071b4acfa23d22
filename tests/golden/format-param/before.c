// SPDX-License-Identifier: GPL-2.0
/* A function that only passes its walker's page format on takes the format. */
#include <linux/kvm_host.h>

static bool __is_rsvd_bits_set(struct rsvd_bits_validate *rsvd_check, u64 pte, int level)
{
	return pte & rsvd_check->rsvd_bits_mask[(pte >> 7) & 1][level - 1];
}

static bool is_rsvd_bits_set(struct kvm_mmu *mmu, u64 gpte, int level)
{
	return __is_rsvd_bits_set(&mmu->guest_rsvd_check, gpte, level);
}

bool prefetch_invalid_gpte(struct kvm_vcpu *vcpu, u64 gpte)
{
	if (!vcpu->arch.mmu->cpu_role.base.level)
		return true;
	return is_rsvd_bits_set(vcpu->arch.mmu, gpte, 1);
}

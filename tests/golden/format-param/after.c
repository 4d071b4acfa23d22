// SPDX-License-Identifier: GPL-2.0
/* A function that only passes its walker's page format on takes the format. */
#include <linux/kvm_host.h>

static bool __is_rsvd_bits_set(struct kvm_page_format *fmt, u64 pte, int level)
{
	return pte & fmt->rsvd_bits_mask[(pte >> 7) & 1][level - 1];
}

static bool is_rsvd_bits_set(struct kvm_page_format *fmt, u64 gpte, int level)
{
	return __is_rsvd_bits_set(fmt, gpte, level);
}

bool prefetch_invalid_gpte(struct kvm_vcpu *vcpu, u64 gpte)
{
	if (!vcpu->arch.mmu->w->cpu_role.base.level)
		return true;
	return is_rsvd_bits_set(&vcpu->arch.mmu->w->fmt, gpte, 1);
}

// SPDX-License-Identifier: GPL-2.0
/* A parameter pointing to the page format is called fmt; a local keeps its name. */
#include <linux/kvm_host.h>

static bool is_bad_mt_xwr(struct kvm_page_format *fmt, u64 pte)
{
	return fmt->bad_mt_xwr & (1ull << (pte & 0x3f));
}

static u64 rsvd_bits(struct kvm_mmu *mmu, int level)
{
	struct kvm_page_format *rsvd_check = &mmu->fmt;

	return rsvd_check->rsvd_bits_mask[0][level];
}

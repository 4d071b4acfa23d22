// SPDX-License-Identifier: GPL-2.0
/* The page format read several times through the walker is read through one pointer. */
#include <linux/kvm_host.h>

static inline u8 permission_fault(struct kvm_vcpu *vcpu, struct kvm_pagewalk *w,
				  unsigned pte_access, unsigned index)
{
	struct kvm_page_format *fmt = &w->fmt;
	u32 pkru_bits = 0;
	u8 fault = (fmt->permissions[index] >> pte_access) & 1;

	if (fmt->pkru_mask)
		pkru_bits = (fmt->pkru_mask >> index) & 3;
	return fault | pkru_bits;
}

/* Writes through the walker's format: no local. */
static void update_pkru(struct kvm_pagewalk *w)
{
	w->fmt.pkru_mask = 0;
	w->fmt.pkru_mask |= w->fmt.permissions[0];
}

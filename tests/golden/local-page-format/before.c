// SPDX-License-Identifier: GPL-2.0
/* The page format read several times through the walker is read through one pointer. */
#include <linux/kvm_host.h>

static inline u8 permission_fault(struct kvm_vcpu *vcpu, struct kvm_mmu *mmu,
				  unsigned pte_access, unsigned index)
{
	u32 pkru_bits = 0;
	u8 fault = (mmu->permissions[index] >> pte_access) & 1;

	if (mmu->pkru_mask)
		pkru_bits = (mmu->pkru_mask >> index) & 3;
	return fault | pkru_bits;
}

/* Writes through the walker's format: no local. */
static void update_pkru(struct kvm_mmu *mmu)
{
	mmu->pkru_mask = 0;
	mmu->pkru_mask |= mmu->permissions[0];
}

// SPDX-License-Identifier: GPL-2.0
/* A walker function that reads the walker only through role accessors and its
 * format is split into the format's function and the walker's call of it. */
#include <linux/kvm_host.h>

static inline bool is_cr0_wp(struct kvm_mmu *mmu)
{
	return mmu->cpu_role.base.cr0_wp;
}

static void update_permission_bitmask(struct kvm_mmu *mmu, bool ept)
{
	unsigned index;
	const u16 w = 2;

	bool cr0_wp = is_cr0_wp(mmu);

	for (index = 0; index < 16; ++index)
		mmu->permissions[index] = (cr0_wp && !ept) ? w : 0;
}

void reset_guest_paging_metadata(struct kvm_vcpu *vcpu, struct kvm_mmu *mmu)
{
	update_permission_bitmask(mmu, false);
}

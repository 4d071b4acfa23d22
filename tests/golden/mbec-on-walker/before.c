// SPDX-License-Identifier: GPL-2.0
/* For an EPT walker, MBEC is what the walked role's CR4.SMEP bit records. */
#include <linux/kvm_host.h>

bool mmu_has_mbec(struct kvm_mmu *mmu);

bool user_exec_allowed(struct kvm_mmu *mmu, u64 gpte)
{
	if (!mmu_has_mbec(mmu))
		return true;
	return (gpte & mmu->pkru_mask) != 0;
}

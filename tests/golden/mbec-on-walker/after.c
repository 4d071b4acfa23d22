// SPDX-License-Identifier: GPL-2.0
/* For an EPT walker, MBEC is what the walked role's CR4.SMEP bit records. */
#include <linux/kvm_host.h>

bool mmu_has_mbec(struct kvm_mmu *mmu);

bool user_exec_allowed(struct kvm_pagewalk *w, u64 gpte)
{
	if (!is_cr4_smep(w))
		return true;
	return (gpte & w->fmt.pkru_mask) != 0;
}

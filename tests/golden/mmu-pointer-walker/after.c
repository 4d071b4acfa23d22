// SPDX-License-Identifier: GPL-2.0
/* A struct kvm_mmu * that stays an MMU reaches its walker's fields through ->w. */
#include <linux/kvm_host.h>

bool role_matches(struct kvm_mmu *mmu)
{
	struct kvm_pagewalk *w = mmu->w;

	return mmu->root_role.level == w->cpu_role.base.level;
}

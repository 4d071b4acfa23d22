// SPDX-License-Identifier: GPL-2.0
/* A macro parameter that only reaches walker fields is called w; one that
 * reaches the MMU's own fields, or none, keeps its name. */
#include <linux/kvm_host.h>

#define HAVE_ACCESSED_DIRTY(mmu) (!(mmu)->cpu_role.base.ad_disabled)
#define ROOT_LEVEL(mmu) ((mmu)->root_role.level)
#define ALWAYS(mmu) true

bool have_ad(struct kvm_vcpu *vcpu)
{
	return HAVE_ACCESSED_DIRTY(vcpu->arch.mmu) && ROOT_LEVEL(vcpu->arch.mmu) && ALWAYS(0);
}

// SPDX-License-Identifier: GPL-2.0
/* Where a struct kvm_mmu * is still required, walk_mmu is root_mmu. */
#include <linux/kvm_host.h>

static void free_roots(struct kvm_vcpu *vcpu, struct kvm_mmu *mmu)
{
	mmu->root.hpa = 0;
}

void free_walk_roots(struct kvm_vcpu *vcpu)
{
	free_roots(vcpu, vcpu->arch.walk_mmu);
}

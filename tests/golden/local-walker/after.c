// SPDX-License-Identifier: GPL-2.0
/* A walker reached through the same MMU again and again gets one local. */
#include <linux/kvm_host.h>

static int mmu_root_level(struct kvm_vcpu *vcpu)
{
	struct kvm_mmu *mmu = vcpu->arch.mmu;
	struct kvm_pagewalk *w = mmu->w;
	int level = mmu->root_role.level;

	if (w->cpu_role.base.level == 3)
		level = w->get_pdptr(vcpu, 0);
	return level + w->cpu_role.base.level;
}

/* The MMU is known to be guest_mmu: the local is the nGPA walker itself. */
static void ept_role(struct kvm_vcpu *vcpu, union kvm_cpu_role new_mode)
{
	struct kvm_mmu *context = &vcpu->arch.guest_mmu;
	struct kvm_pagewalk *ngpa_walk = &vcpu->arch.ngpa_walk;

	if (new_mode.as_u32 != ngpa_walk->cpu_role.as_u32) {
		ngpa_walk->cpu_role.as_u32 = new_mode.as_u32;
		context->root_role.word = new_mode.as_u32;
	}
}

/* The base changes in the function: no local. */
static int two_mmus(struct kvm_vcpu *vcpu)
{
	struct kvm_mmu *mmu = vcpu->arch.mmu;
	int level = mmu->w->cpu_role.base.level + mmu->root_role.level;

	mmu = &vcpu->arch.root_mmu;
	return level + mmu->w->cpu_role.base.level;
}

/*
 * Every use is under #if: a local would be unused, an error under -Werror, in
 * each instantiation where the condition is false (paging_tmpl.h's PTTYPE).
 */
static int pdptr_only_if_64(struct kvm_vcpu *vcpu, struct kvm_mmu *mmu, int level)
{
#if PTTYPE == 64
	if (mmu->w->cpu_role.base.level == 3)
		level = mmu->w->get_pdptr(vcpu, 0);
#endif
	return level + mmu->root_role.level;
}

/* A body that starts with #if: the local is indented as the code is, not as the #if. */
static int level_after_if(struct kvm_vcpu *vcpu, struct kvm_mmu *mmu, int level)
{
	struct kvm_pagewalk *w = mmu->w;

#if PTTYPE == 32
	level += w->cpu_role.ext.cr4_pse;
#endif
	return level + w->cpu_role.base.level + mmu->root_role.level;
}

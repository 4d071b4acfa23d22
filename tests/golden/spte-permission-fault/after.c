// SPDX-License-Identifier: GPL-2.0
/* SPTE permission checks go through the MMU's own page format: the old helper
 * is replaced, its caller reads the vCPU's MMU after its bail-out check, and
 * each reset of an MMU's SPTE format fills the format's permission bitmap. */
#include <linux/kvm_host.h>

#define ACC_EXEC_MASK		1
#define ACC_WRITE_MASK		2
#define ACC_USER_MASK		4
#define ACC_USER_EXEC_MASK	8

extern u64 shadow_xs_mask;
extern u64 shadow_xu_mask;

struct kvm_page_fault {
	u64 error_code;
	bool exec;
	bool write;
};

/*
 * Returns true if the access indicated by @fault is forbidden by the existing
 * SPTE protections.
 */
static inline bool spte_permission_fault(struct kvm_mmu *mmu, u64 spte,
					 struct kvm_page_fault *fault)
{
	unsigned int pfec, pte_access;

	if (!is_shadow_present_pte(spte))
		return true;

	BUILD_BUG_ON(PT_PRESENT_MASK != ACC_READ_MASK);
	BUILD_BUG_ON(PT_WRITABLE_MASK != ACC_WRITE_MASK);
	BUILD_BUG_ON(VMX_EPT_READABLE_MASK != ACC_READ_MASK);
	BUILD_BUG_ON(VMX_EPT_WRITABLE_MASK != ACC_WRITE_MASK);

	/* strip nested paging fault error codes */
	pte_access = spte & (PT_PRESENT_MASK | PT_WRITABLE_MASK);
	if (shadow_nx_mask) {
		pte_access |= spte & shadow_user_mask ? ACC_USER_MASK : 0;
		pte_access |= spte & shadow_nx_mask ? 0 : ACC_EXEC_MASK;
	} else {
		pte_access |= spte & shadow_xs_mask ? ACC_EXEC_MASK : 0;
		pte_access |= spte & shadow_xu_mask ? ACC_USER_EXEC_MASK : 0;
	}

	/*
	 * RSVD is handled elsewhere, and is used for SMAP in the context
	 * of accessing fmt.permissions[].  SPTEs never use PK or SS, as
	 * they are not supported for shadow paging and irrelevant for TDP.
	 */
	pfec = fault->error_code &
	       (PFERR_WRITE_MASK | PFERR_USER_MASK | PFERR_FETCH_MASK);
	return (mmu->fmt.permissions[pfec >> 1] >> pte_access) & 1;
}

int fast_page_fault(struct kvm_vcpu *vcpu, struct kvm_page_fault *fault, u64 spte)
{
	struct kvm_mmu *mmu;
	int ret = 0;

	if (!fault->write && !fault->exec)
		return ret;

	mmu = vcpu->arch.mmu;
	/* The spte_permission_fault() check: spurious. */
	if (!spte_permission_fault(mmu, spte, fault))
		ret = 1;
	else if (spte_permission_fault(mmu, spte | ACC_WRITE_MASK, fault))
		ret = 2;
	return ret;
}

static inline bool is_cr0_wp(struct kvm_pagewalk *w)
{
	return w->cpu_role.base.cr0_wp;
}

static void __update_permission_bitmask(struct kvm_page_format *fmt, bool tdp,
					bool ept, bool cr0_wp)
{
	unsigned index;

	for (index = 0; index < 16; ++index)
		fmt->permissions[index] = (cr0_wp && !ept && !tdp) ? 2 : 0;
}

static void update_permission_bitmask(struct kvm_pagewalk *w, bool tdp, bool ept)
{
	__update_permission_bitmask(&w->fmt, tdp, ept,
				    is_cr0_wp(w));
}

static void update_spte_permission_bitmask(struct kvm_mmu *mmu, bool tdp, bool ept)
{
	__update_permission_bitmask(&mmu->fmt, tdp, ept, true);
}

void reset_tdp_shadow_zero_bits_mask(struct kvm_mmu *context);

void init_kvm_tdp_mmu(struct kvm_vcpu *vcpu)
{
	struct kvm_mmu *context = &vcpu->arch.root_mmu;

	update_permission_bitmask(context->w, false, false);

	update_spte_permission_bitmask(context, true, shadow_xs_mask);
	reset_tdp_shadow_zero_bits_mask(context);
}

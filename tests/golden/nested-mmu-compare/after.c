// SPDX-License-Identifier: GPL-2.0
/* Only the L2 GVA walk goes through the nested stage. */
#include <linux/kvm_host.h>

static inline bool mmu_is_nested(struct kvm_vcpu *vcpu)
{
	return vcpu->arch.mmu == &vcpu->arch.guest_mmu;
}

gpa_t translate_gpa(struct kvm_vcpu *vcpu, struct kvm_pagewalk *w, gpa_t gpa, u64 access,
		    struct x86_exception *exception)
{
	if (!mmu_is_nested(vcpu) || w == &vcpu->arch.ngpa_walk)
		return gpa;
	return w->gva_to_gpa(vcpu, w, gpa, access, exception);
}

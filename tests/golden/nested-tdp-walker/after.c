// SPDX-License-Identifier: GPL-2.0
/* Where the code says L2 runs with nested TDP, the fault MMU is guest_mmu: its
 * walker is the nGPA walker, named as such. */
#include <linux/kvm_host.h>

#define WARN_ON_ONCE(x) (x)
#define WARN_ON(x) (x)

struct x86_exception {
	bool nested_page_fault;
	u64 address;
};

bool mmu_is_nested(struct kvm_vcpu *vcpu);

gpa_t translate_nested_gpa(struct kvm_vcpu *vcpu, gpa_t gpa, u64 access,
			   struct x86_exception *exception)
{
	struct kvm_pagewalk *w = &vcpu->arch.ngpa_walk;

	if (WARN_ON_ONCE(!mmu_is_nested(vcpu)))
		return gpa;

	return w->gva_to_gpa(vcpu, w, gpa, access, exception);
}

void inject_emulated_page_fault(struct kvm_vcpu *vcpu, struct x86_exception *fault)
{
	struct kvm_pagewalk *fault_walk;

	fault_walk = fault->nested_page_fault ? &vcpu->arch.ngpa_walk :
					       &vcpu->arch.gva_walk;
	fault_walk->inject_page_fault(vcpu, fault, false);
}

/* Asserting the opposite says nothing about guest_mmu. */
u64 walk_root(struct kvm_vcpu *vcpu)
{
	WARN_ON(mmu_is_nested(vcpu));
	return vcpu->arch.mmu->w->get_guest_pgd(vcpu);
}

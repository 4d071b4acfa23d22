// SPDX-License-Identifier: GPL-2.0-only
/* A small old-layout MMU file written for the lint corpus. */
#include <asm/kvm_host.h>

/* ruleid: KVM100 */
static bool is_role_set(struct kvm_mmu *mmu)
{
	/* ruleid: KVM002 */
	return mmu->cpu_role.word != 0;
}

gpa_t kvm_gva_to_gpa_read(struct kvm_vcpu *vcpu, gva_t gva,
			  struct x86_exception *exception)
{
	/* ruleid: KVM001 */
	struct kvm_mmu *mmu = vcpu->arch.walk_mmu;

	/* ruleid: KVM100 */
	if (!is_role_set(mmu))
		return gva;
	/* ruleid: KVM002 */
	return mmu->gva_to_gpa(vcpu, mmu, gva, 0, exception);
}

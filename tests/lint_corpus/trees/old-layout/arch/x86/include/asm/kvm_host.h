/* SPDX-License-Identifier: GPL-2.0-only */
/* A small old-layout header written for the lint corpus. */
#ifndef _ASM_X86_KVM_HOST_H
#define _ASM_X86_KVM_HOST_H

struct kvm_vcpu;
struct x86_exception;

union kvm_cpu_role {
	u32 word;
};

/* ruleid: KVM100 */
struct kvm_mmu {
	/* ruleid: KVM002 */
	unsigned long (*get_guest_pgd)(struct kvm_vcpu *vcpu);
	/* ruleid: KVM002 */
	gpa_t (*gva_to_gpa)(struct kvm_vcpu *vcpu, struct kvm_mmu *mmu,
			    gpa_t gva_or_gpa, u64 access,
			    struct x86_exception *exception);
	/* ruleid: KVM002 */
	union kvm_cpu_role cpu_role;
	/* ruleid: KVM100 */
	hpa_t root;
};

struct kvm_vcpu_arch {
	struct kvm_mmu *mmu;
	struct kvm_mmu root_mmu;
	struct kvm_mmu guest_mmu;	/* ruleid: KVM001, KVM100 (the next line) */
	struct kvm_mmu nested_mmu;
	/* ruleid: KVM001 */
	struct kvm_mmu *walk_mmu;
};

#endif

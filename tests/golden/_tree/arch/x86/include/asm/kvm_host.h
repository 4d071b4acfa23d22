/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _MINI_ASM_X86_KVM_HOST_H
#define _MINI_ASM_X86_KVM_HOST_H

#define PT64_ROOT_MAX_LEVEL 5
#define KVM_MMU_NUM_PREV_ROOTS 3

struct kvm_vcpu;
struct kvm_mmu_page;
struct kvm_page_fault;
struct x86_exception;

typedef _Bool bool;
#define NULL ((void *)0)
#define false 0
#define true 1

typedef unsigned long long u64;
typedef unsigned int u32;
typedef unsigned short u16;
typedef u64 gpa_t;
typedef u64 hpa_t;
typedef u64 gva_t;

union kvm_cpu_role {
	u32 as_u32;
	struct {
		unsigned level:4;
		unsigned cr0_wp:1;
		unsigned:3;
	} base;
	struct {
		unsigned valid:1;
		unsigned cr4_pse:1;
	} ext;
};

union kvm_mmu_page_role {
	u32 word;
	struct {
		unsigned level:4;
		unsigned direct:1;
		unsigned invalid:1;
	};
};

struct kvm_mmu_root_info {
	gpa_t pgd;
	hpa_t hpa;
};

struct rsvd_bits_validate {
	u64 rsvd_bits_mask[2][PT64_ROOT_MAX_LEVEL];
	u64 bad_mt_xwr;
};

/*
 * The kvm_mmu structure walks guest page tables and builds shadow ones.
 * walk_mmu points at the context used for gva_to_gpa translations.
 */
struct kvm_mmu {
	unsigned long (*get_guest_pgd)(struct kvm_vcpu *vcpu);
	u64 (*get_pdptr)(struct kvm_vcpu *vcpu, int index);
	int (*page_fault)(struct kvm_vcpu *vcpu, struct kvm_page_fault *fault);
	void (*inject_page_fault)(struct kvm_vcpu *vcpu,
				  struct x86_exception *fault,
				  bool from_hardware);
	gpa_t (*gva_to_gpa)(struct kvm_vcpu *vcpu, struct kvm_mmu *mmu,
			    gpa_t gva_or_gpa, u64 access,
			    struct x86_exception *exception);
	int (*sync_spte)(struct kvm_vcpu *vcpu,
			 struct kvm_mmu_page *sp, int i);
	struct kvm_mmu_root_info root;
	union kvm_cpu_role cpu_role;
	union kvm_mmu_page_role root_role;
	u32 pkru_mask;
	struct kvm_mmu_root_info prev_roots[KVM_MMU_NUM_PREV_ROOTS];
	u16 permissions[16];
	u64 *pae_root;
	struct rsvd_bits_validate shadow_zero_check;
	struct rsvd_bits_validate guest_rsvd_check;
};

struct kvm_vcpu_arch {
	unsigned long cr3;
	/* The MMU that handles faults: &root_mmu or &guest_mmu. */
	struct kvm_mmu *mmu;
	struct kvm_mmu root_mmu;
	struct kvm_mmu guest_mmu;
	/* Walk-only context for L2's page tables (nested TDP). */
	struct kvm_mmu nested_mmu;
	/* Pointer to the mmu context used for gva_to_gpa translations. */
	struct kvm_mmu *walk_mmu;
	u64 pdptrs[4];
};

void kvm_mmu_invalidate_addr(struct kvm_vcpu *vcpu, struct kvm_mmu *mmu,
			     u64 addr, unsigned long roots);

#endif

/*
 * Interface between the harness (harness.c, plain user-space C, no kernel
 * headers) and the glue files appended to the kernel's own preprocessed
 * translation units (glue_*.c see every kernel type and static function).
 * Only plain C types cross it, and every name starts with h_.
 */
#ifndef H_HARNESS_H
#define H_HARNESS_H

typedef unsigned long long h_u64;

struct h_fault {
	int vector;
	h_u64 error_code;
	h_u64 address;
	int nested;
	const char *to;          /* "L1" / "L2" */
	const char *kind;        /* pf, pf_vmexit, ept_violation, ept_misconfig, npf */
	int has_eq;
	h_u64 exit_qualification;
	int has_info;
	h_u64 exit_info_1, exit_info_2;
};

struct h_nested {
	int svm, tdp, ad, execonly, pf_intercept;
	int mbec;                /* VMX: L1 enables mode-based execute control for EPT */
	h_u64 root, cr0, cr3, cr4, efer;
	int cpl;
};

/* CPU state the vendor callbacks report (kvm_x86_ops.get_cpl etc.). */
struct h_state {
	int cpl, ac;
	int event;               /* H_EV_* of the event being applied */
	int guest_mode;
	int quiet;               /* set-up in progress: WARNs are not results */
	struct h_fault *exit;    /* where a VM-exit replacement records itself */
};
extern struct h_state h_state;

enum { H_EV_OTHER, H_EV_TRANSLATE, H_EV_INVLPG };
enum { H_ACC_READ, H_ACC_WRITE, H_ACC_FETCH, H_ACC_SYSTEM, H_ACC_IMPLICIT,
       H_ACC_IMPLICIT_WRITE, H_ACC_L2GPA_READ, H_ACC_L2GPA_WRITE };

/* harness.c */
void *h_zalloc(unsigned long size);
void *h_page(void);                       /* zeroed, 4 KiB aligned */
void *h_kernel_page(void);                /* zeroed, with a struct page */
void *h_page_struct(void *va);            /* virt_to_page() of a kernel page */
unsigned long h_gfn_to_hva(h_u64 gfn);
void h_note_flush(h_u64 addr);
void h_set_touched_gpa(h_u64 gpa);
h_u64 h_touched_gpa(void);
void h_bug(const char *what) __attribute__((noreturn));
void h_trap(const char *what) __attribute__((noreturn));
int h_warned(void);

/* glue_x86.c */
void h_init(void);                        /* once, before the first event */
void *h_vcpu_new(int tdp, int maxphyaddr);
int h_set_cr0(void *vcpu, h_u64 val, int passthrough);
int h_set_cr3(void *vcpu, h_u64 val);
int h_set_cr4(void *vcpu, h_u64 val);
int h_set_efer(void *vcpu, h_u64 val);
void h_set_pkru(void *vcpu, h_u64 val);
void h_reset_context(void *vcpu);
void h_invlpg(void *vcpu, h_u64 addr);
int h_translate(void *vcpu, int access, h_u64 addr, h_u64 *gpa, struct h_fault *f);
int h_nested_entry(void *vcpu, struct h_nested *n);   /* 0 ok, 1 pdptrs failed, -1 bad */
int h_nested_exit(void *vcpu);
int h_is_guest_mode(void *vcpu);

/* glue_mmu.c */
void h_mmu_setup(int tdp);
void h_mmu_running(void *vcpu);      /* the current MMU gets a root, as in a running vCPU */

/* glue_cpuid.c */
void h_cpuid_setup(void *vcpu, int maxphyaddr);

/* glue_vmx.c / glue_svm.c (weak: a tree built without them has no nested support) */
unsigned long h_vmx_vcpu_size(void) __attribute__((weak));
unsigned long h_svm_vcpu_size(void) __attribute__((weak));
unsigned long h_vmx_kvm_size(void) __attribute__((weak));
unsigned long h_svm_kvm_size(void) __attribute__((weak));
void *h_vmx_nested_ops(void) __attribute__((weak));
void *h_svm_nested_ops(void) __attribute__((weak));
int h_vmx_entry(void *vcpu, struct h_nested *n) __attribute__((weak));
void h_vmx_exit(void *vcpu) __attribute__((weak));
int h_svm_entry(void *vcpu, struct h_nested *n) __attribute__((weak));
void h_svm_exit(void *vcpu) __attribute__((weak));
void h_vmx_init_mmu(void *vcpu) __attribute__((weak));
void h_svm_init_mmu(void *vcpu) __attribute__((weak));

#endif

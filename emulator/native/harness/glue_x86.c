/*
 * Appended to the tree's own preprocessed arch/x86/kvm/x86.c: sees its types
 * and static functions.  The register-level glue of emulator/machine.py
 * (CR writes as far as they reach the MMU, nested entry/exit order), driving
 * the kernel's own functions.  Kernel macros are gone after preprocessing,
 * so architectural constants are spelled here.  Layout-specific expressions
 * come from layout.h, generated from rules/ for the tree's layout; so do the
 * tree's declarations (emulator/native/features.py: H_HAS_<struct>__<member>,
 * H_NARGS_<function>, H_DEFINED_<function>), which the glue #if's on where trees
 * differ -- never on a kernel version.  C89 (5.10 builds with -std=gnu89).
 */
#include "harness.h"
#include "layout.h"
#include "ops.h"

#define H_CR0_PG (1ull << 31)
#define H_CR0_WP (1ull << 16)
#define H_CR4_PSE (1ull << 4)
#define H_CR4_PAE (1ull << 5)
#define H_CR4_SMEP (1ull << 20)
#define H_CR4_PDPTR_BITS (H_CR4_PSE | H_CR4_PAE | H_CR4_SMEP)
#define H_EFER_LMA (1ull << 10)
#define H_PFERR_WRITE (1ull << 1)
#define H_PFERR_GUEST_FINAL (1ull << 32)
#define H_RFLAGS_AC (1ul << 18)
#define H_INVALID_GPA (~0ull)

/* load_pdptrs() of the walker the CPU uses: 5.10 passes it (walk_mmu), 6.x finds it. */
#if H_NARGS_load_pdptrs == 3
#define H_LOAD_PDPTRS(vcpu, cr3) load_pdptrs(vcpu, H_GVA_WALKER(vcpu), cr3)
#else
#define H_LOAD_PDPTRS(vcpu, cr3) load_pdptrs(vcpu, cr3)
#endif
/* kvm_init_mmu() without a reset of the roots: 5.10 has the flag (false at vCPU
 * creation and where the roots stay), 6.x never resets them there. */
#if H_NARGS_kvm_init_mmu == 2
#define H_INIT_MMU(vcpu) kvm_init_mmu(vcpu, false)
#else
#define H_INIT_MMU(vcpu) kvm_init_mmu(vcpu)
#endif


void h_bug_layout(int *size, int *off_file, int *off_line, int *off_flags)
{
	*size = sizeof(struct bug_entry);
	*off_file = __builtin_offsetof(struct bug_entry, file_disp);
	*off_line = __builtin_offsetof(struct bug_entry, line);
	*off_flags = __builtin_offsetof(struct bug_entry, flags);
}

/* ---- the vendor callbacks the MMU paths make (kvm_x86_ops) -------------- */
static int h_get_cpl(struct kvm_vcpu *vcpu) { return h_state.cpl; }
static unsigned long h_get_rflags(struct kvm_vcpu *vcpu)
{
	return 2 | (h_state.ac ? H_RFLAGS_AC : 0);
}
/* Every register is kept available in vcpu->arch: nothing to read back. */
static void h_cache_reg(struct kvm_vcpu *vcpu, enum kvm_reg reg) { }
static void h_flush_tlb_gva(struct kvm_vcpu *vcpu, gva_t addr) { h_note_flush(addr); }
static void h_flush_tlb_current(struct kvm_vcpu *vcpu) { }
static void h_load_mmu_pgd(struct kvm_vcpu *vcpu, hpa_t root_hpa, int root_level) { }
static void h_vcpu_after_set_cpuid(struct kvm_vcpu *vcpu) { }

/* Hooks by the names the tree's struct kvm_x86_ops gives them (5.10: tlb_flush_*). */
static struct kvm_x86_ops h_x86_ops = {
	.get_cpl = h_get_cpl,
	.get_rflags = h_get_rflags,
	.cache_reg = h_cache_reg,
#if defined(H_HAS_kvm_x86_ops__flush_tlb_gva)
	.flush_tlb_gva = h_flush_tlb_gva,
#elif defined(H_HAS_kvm_x86_ops__tlb_flush_gva)
	.tlb_flush_gva = h_flush_tlb_gva,
#endif
#if defined(H_HAS_kvm_x86_ops__flush_tlb_current)
	.flush_tlb_current = h_flush_tlb_current,
#elif defined(H_HAS_kvm_x86_ops__tlb_flush_current)
	.tlb_flush_current = h_flush_tlb_current,
#endif
	.load_mmu_pgd = h_load_mmu_pgd,
	.vcpu_after_set_cpuid = h_vcpu_after_set_cpuid,
};

static void *h_nested_ops_now;

/* Into kvm_x86_ops as at module load: the tree's own kvm_ops_update() (the copy
 * and the static-call patching; 7.x also patches the kvm_x86_nested_* static calls
 * from nested_ops), or, in a tree without static calls for kvm_x86_ops (5.10:
 * callers read the struct), the copy its kvm_arch_hardware_setup() makes. */
static void h_install_ops(void)
{
#ifdef H_DEFINED_kvm_ops_update
	static struct kvm_x86_init_ops init_ops = { .runtime_ops = &h_x86_ops };

	kvm_ops_update(&init_ops);
#else
	memcpy(&kvm_x86_ops, &h_x86_ops, sizeof(kvm_x86_ops));
#endif
}

/* The vendor's nested_ops, installed as at module load. */
static void h_use_vendor(void *nested_ops)
{
	if (nested_ops == h_nested_ops_now)
		return;
	h_nested_ops_now = nested_ops;
	h_x86_ops.nested_ops = nested_ops;
	h_state.quiet = 1;
	h_install_ops();
	h_state.quiet = 0;
}

void h_init(void)
{
	/* The host CPU: NX, 1 GiB pages, long mode (CPUID 0x80000001 EDX, word 1). */
	boot_cpu_data.x86_capability[1] |= (1u << 20) | (1u << 26) | (1u << 29);
	if (h_vmx_nested_ops)
		h_x86_ops.nested_ops = h_vmx_nested_ops();
	h_nested_ops_now = h_x86_ops.nested_ops;
	/* Hooks left NULL trap with their name when called (ops.h, for the mandatory
	 * hooks of the tree's kvm-x86-ops.h; in a tree without it a NULL hook's call is
	 * the "call through NULL function pointer" result). */
	H_FILL_OPS(h_x86_ops);
	h_install_ops();
}

static unsigned long h_max(unsigned long a, unsigned long b) { return a > b ? a : b; }

/* One allocation serves as vcpu_vmx and as vcpu_svm (and kvm_vmx/kvm_svm). */
static unsigned long h_vcpu_size, h_kvm_size;

/* In KVM a vCPU belongs to one vendor.  A trace may enter VMX and then SVM in
 * one episode: the vendor part then starts zeroed, as a new vCPU's would, not
 * with the other vendor's bytes (vmx->fail = 1 read as svm->nested.vmcb02.ptr,
 * wherever a layout change puts the two fields at one offset). */
static void h_fresh_vendor_part(struct kvm_vcpu *vcpu, void *nested_ops)
{
	if (nested_ops == h_nested_ops_now)
		return;
	memset((char *)vcpu + sizeof(*vcpu), 0, h_vcpu_size - sizeof(*vcpu));
	memset((char *)vcpu->kvm + sizeof(*vcpu->kvm), 0, h_kvm_size - sizeof(*vcpu->kvm));
}

void *h_vcpu_new(int tdp, int maxphyaddr)
{
	unsigned long vsize = sizeof(struct kvm_vcpu), ksize = sizeof(struct kvm);
	struct kvm_vcpu *vcpu;
	struct x86_emulate_ctxt *ctxt;

	h_mmu_setup(tdp);
	if (h_vmx_vcpu_size)
		vsize = h_max(vsize, h_vmx_vcpu_size()), ksize = h_max(ksize, h_vmx_kvm_size());
	if (h_svm_vcpu_size)
		vsize = h_max(vsize, h_svm_vcpu_size()), ksize = h_max(ksize, h_svm_kvm_size());
	vcpu = h_zalloc(vsize);
	vcpu->kvm = h_zalloc(ksize);
	h_vcpu_size = vsize;
	h_kvm_size = ksize;
	memset(&vcpu->arch.regs_avail, 0xff, sizeof(vcpu->arch.regs_avail));
	vcpu->arch.last_vmentry_cpu = -1;
	ctxt = h_zalloc(sizeof(*ctxt));
	ctxt->vcpu = vcpu;
	ctxt->ops = &emulate_ops;
	vcpu->arch.emulate_ctxt = ctxt;
	h_state.cpl = 0;
	h_state.ac = 0;
	h_state.guest_mode = 0;
	vcpu->arch.pkru = 0;
	kvm_mmu_create(vcpu);
	h_cpuid_setup(vcpu, maxphyaddr);
	H_INIT_MMU(vcpu);
	return vcpu;
}

/* ---- register writes (machine.py's set_cr0/set_cr3/set_cr4) -------------- */
int h_set_cr0(void *v, h_u64 cr0, int passthrough)
{
	struct kvm_vcpu *vcpu = v;
	h_u64 old = vcpu->arch.cr0;

	if (passthrough) {
		/* A guest-owned CR0.WP write: KVM only sees it on its next walk. */
		if (((old ^ cr0) & ~H_CR0_WP) || !tdp_enabled)
			return -1;
		vcpu->arch.cr0 = cr0;
		return 1;
	}
	if (!(old & H_CR0_PG) && (cr0 & H_CR0_PG) && (vcpu->arch.cr4 & H_CR4_PAE) &&
	    !(vcpu->arch.efer & H_EFER_LMA) && !H_LOAD_PDPTRS(vcpu, vcpu->arch.cr3))
		return 0;
	vcpu->arch.cr0 = cr0;
	if ((cr0 ^ old) == H_CR0_WP) {
		if (!(cr0 & H_CR0_PG))
			return 1;
		if (tdp_enabled) {
			H_INIT_MMU(vcpu);
			return 1;
		}
	}
	if ((cr0 ^ old) & (H_CR0_PG | H_CR0_WP))
		kvm_mmu_reset_context(vcpu);
	return 1;
}

int h_set_cr3(void *v, h_u64 cr3)
{
	struct kvm_vcpu *vcpu = v;

	if (is_pae_paging(vcpu) && !H_LOAD_PDPTRS(vcpu, cr3))
		return 0;
	vcpu->arch.cr3 = cr3;
	return 1;
}

int h_set_cr4(void *v, h_u64 cr4)
{
	struct kvm_vcpu *vcpu = v;
	h_u64 old = vcpu->arch.cr4;

	if ((vcpu->arch.cr0 & H_CR0_PG) && !(vcpu->arch.efer & H_EFER_LMA) &&
	    (cr4 & H_CR4_PAE) && ((cr4 ^ old) & H_CR4_PDPTR_BITS)) {
		int ok;
		vcpu->arch.cr4 = cr4;
		ok = H_LOAD_PDPTRS(vcpu, vcpu->arch.cr3);
		vcpu->arch.cr4 = old;
		if (!ok)
			return 0;
	}
	vcpu->arch.cr4 = cr4;
	if (cr4 != old)
		kvm_mmu_reset_context(vcpu);
	return 1;
}

int h_set_efer(void *v, h_u64 efer)
{
	struct kvm_vcpu *vcpu = v;
	h_u64 old = vcpu->arch.efer;

	vcpu->arch.efer = efer;
	if ((old ^ efer) & ~0xffull)
		kvm_mmu_reset_context(vcpu);
	return 1;
}

void h_set_pkru(void *v, h_u64 val) { ((struct kvm_vcpu *)v)->arch.pkru = val; }
void h_reset_context(void *v) { kvm_mmu_reset_context(v); }
void h_invlpg(void *v, h_u64 addr)
{
	h_mmu_running(v);
	kvm_mmu_invlpg(v, addr);
}
int h_is_guest_mode(void *v) { return is_guest_mode((struct kvm_vcpu *)v); }

/* ---- translations: the emulator's entry points of x86.c ------------------- */
int h_translate(void *v, int access, h_u64 addr, h_u64 *gpa_out, struct h_fault *f)
{
	struct kvm_vcpu *vcpu = v;
	struct x86_emulate_ctxt *ctxt = vcpu->arch.emulate_ctxt;
	struct x86_exception e;
	unsigned char byte;
	gpa_t gpa = H_INVALID_GPA;
	int r;

	memset(&e, 0, sizeof(e));
	memset(&vcpu->arch.exception, 0, sizeof(vcpu->arch.exception));
	H_CLEAR_EXCEPTION_VMEXIT(vcpu);
	h_set_touched_gpa(H_INVALID_GPA);
	h_mmu_running(vcpu);
	switch (access) {
	case H_ACC_READ:
		gpa = kvm_mmu_gva_to_gpa_read(vcpu, addr, &e);
		break;
	case H_ACC_WRITE:
		gpa = kvm_mmu_gva_to_gpa_write(vcpu, addr, &e);
		break;
	case H_ACC_SYSTEM:
		gpa = kvm_mmu_gva_to_gpa_system(vcpu, addr, &e);
		break;
	case H_ACC_FETCH:
		/* The instruction fetch path reads the byte: the GPA it read is the answer. */
		r = kvm_fetch_guest_virt(ctxt, addr, &byte, 1, &e);
		gpa = r == 0 ? h_touched_gpa() : H_INVALID_GPA;
		break;
	case H_ACC_IMPLICIT:
		r = emulator_read_std(ctxt, addr, &byte, 1, &e, true);
		gpa = r == 0 ? h_touched_gpa() : H_INVALID_GPA;
		break;
	case H_ACC_IMPLICIT_WRITE:
		byte = 0;
		r = emulator_write_std(ctxt, addr, &byte, 1, &e, true);
		gpa = r == 0 ? h_touched_gpa() : H_INVALID_GPA;
		break;
	default:
		/* As hyperv.c translates an (n)GPA of the running level: the final stage of an
		 * L2 access (7.x WARNs when a nested fault names no stage; 6.1's u16
		 * error code drops the bit). */
		gpa = H_TRANSLATE_GPA(vcpu, H_GVA_WALKER(vcpu), addr, H_PFERR_GUEST_FINAL |
				      (access == H_ACC_L2GPA_WRITE ? H_PFERR_WRITE : 0), &e);
		break;
	}
	if (gpa != H_INVALID_GPA) {
		*gpa_out = gpa;
		return 0;
	}
	f->vector = e.vector;
	f->error_code = e.error_code;
	f->address = e.address;
	f->nested = e.nested_page_fault;
	f->kind = (void *)0;
	h_state.exit = f;
	kvm_inject_emulated_page_fault(vcpu, &e);
	h_state.exit = (void *)0;
	if (f->kind)
		return 1;            /* a VM-exit to L1 (recorded by the vendor glue) */
	if (H_EXCEPTION_VMEXIT_PENDING(vcpu)) {
		f->to = "L1";
		f->kind = "pf_vmexit";
	} else if (vcpu->arch.exception.pending || vcpu->arch.exception.injected) {
		f->to = is_guest_mode(vcpu) ? "L2" : "L1";
		f->kind = "pf";
	} else {
		f->to = "none";
		f->kind = "not_delivered";
	}
	return 1;
}

/* ---- nested entry/exit: the order of machine.py's nested_entry ------------ */
static struct {
	h_u64 cr0, cr3, cr4, efer;
	int cpl, svm, tdp;
	u64 pdptrs[4];
} h_l1;

int h_nested_entry(void *v, struct h_nested *n)
{
	struct kvm_vcpu *vcpu = v;

	if (is_guest_mode(vcpu))
		return -1;
	if (!tdp_enabled)
		n->tdp = 0;
	h_l1.cr0 = vcpu->arch.cr0;
	h_l1.cr3 = vcpu->arch.cr3;
	h_l1.cr4 = vcpu->arch.cr4;
	h_l1.efer = vcpu->arch.efer;
	h_l1.cpl = h_state.cpl;
	h_l1.svm = n->svm;
	h_l1.tdp = n->tdp;
	H_SAVE_PDPTRS(vcpu, h_l1.pdptrs);
	/* The vendor's view (vmcs12/vmcb12, nested_ops) is set before guest mode. */
	if (n->svm) {
		if (!h_svm_entry)
			h_trap("nested SVM not built in this engine");
		h_fresh_vendor_part(vcpu, h_svm_nested_ops());
		h_use_vendor(h_svm_nested_ops());
		h_svm_entry(vcpu, n);
	} else {
		if (!h_vmx_entry)
			h_trap("nested VMX not built in this engine");
		h_fresh_vendor_part(vcpu, h_vmx_nested_ops());
		h_use_vendor(h_vmx_nested_ops());
		h_vmx_entry(vcpu, n);
	}
	enter_guest_mode(vcpu);
	h_state.guest_mode = 1;
	if (n->tdp) {
		if (n->svm)
			h_svm_init_mmu(vcpu);
		else
			h_vmx_init_mmu(vcpu);
	}
	vcpu->arch.cr0 = n->cr0;
	vcpu->arch.cr3 = n->cr3;
	vcpu->arch.cr4 = n->cr4;
	vcpu->arch.efer = n->efer;
	h_state.cpl = n->cpl;
	kvm_mmu_reset_context(vcpu);
	if (is_pae_paging(vcpu) && !H_LOAD_PDPTRS(vcpu, vcpu->arch.cr3))
		return 1;
	return 0;
}

int h_nested_exit(void *v)
{
	struct kvm_vcpu *vcpu = v;

	if (!is_guest_mode(vcpu))
		return -1;
	if (h_l1.tdp) {
		if (h_l1.svm)
			h_svm_exit(vcpu);
		else
			h_vmx_exit(vcpu);
	}
	leave_guest_mode(vcpu);
	h_state.guest_mode = 0;
	vcpu->arch.cr0 = h_l1.cr0;
	vcpu->arch.cr3 = h_l1.cr3;
	vcpu->arch.cr4 = h_l1.cr4;
	vcpu->arch.efer = h_l1.efer;
	h_state.cpl = h_l1.cpl;
	H_RESTORE_PDPTRS(vcpu, h_l1.pdptrs);
	h_l1.tdp = 0;
	kvm_mmu_reset_context(vcpu);
	return 0;
}

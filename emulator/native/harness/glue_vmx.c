/*
 * Appended to the tree's own preprocessed arch/x86/kvm/vmx/nested.c.
 * L1's view that the MMU reads (vmcs12 EPTP, exception bitmap, the nested
 * EPT capabilities) is written here; the MMU set-up itself is the tree's
 * nested_ept_init_mmu_context().  nested_vmx_vmexit() is replaced (see
 * build.py REPLACED): delivery is reported, not performed.
 */
#include "harness.h"

#define H_EXIT_REASON_EXCEPTION_NMI 0
#define H_EXIT_REASON_EPT_VIOLATION 48
#define H_EXIT_REASON_EPT_MISCONFIG 49
#define H_EPT_EXECUTE_ONLY (1ull << 0)
#define H_EPT_WALK_4 (1ull << 6)
#define H_EPT_WALK_5 (1ull << 7)
#define H_EPT_2MB (1ull << 16)
#define H_EPT_1GB (1ull << 17)
#define H_EPT_AD (1ull << 21)

unsigned long h_vmx_vcpu_size(void) { return sizeof(struct vcpu_vmx); }
unsigned long h_vmx_kvm_size(void) { return sizeof(struct kvm_vmx); }
void *h_vmx_nested_ops(void) { return &vmx_nested_ops; }

int h_vmx_entry(void *v, struct h_nested *n)
{
	struct vcpu_vmx *vmx = to_vmx((struct kvm_vcpu *)v);
	struct vmcs12 *vmcs12;

	if (!vmx->nested.cached_vmcs12)
		vmx->nested.cached_vmcs12 = h_zalloc(4096);
	vmcs12 = get_vmcs12((struct kvm_vcpu *)v);
	memset(vmcs12, 0, sizeof(*vmcs12));
	vmcs12->ept_pointer = n->root;
	vmcs12->exception_bitmap = n->pf_intercept ? 1u << 14 : 0;
	vmcs12->page_fault_error_code_mask = 0;
	vmcs12->page_fault_error_code_match = 0;
	if (n->tdp) {
		vmcs12->cpu_based_vm_exec_control |= 1u << 31;     /* secondary controls */
		vmcs12->secondary_vm_exec_control |= 1u << 1;      /* enable EPT */
		/* Mode-based execute control: what 7.x's nested_ept_mbec_enabled()
		 * reads; trees without MBEC never look at the bit. */
		if (n->mbec)
			vmcs12->secondary_vm_exec_control |= 1u << 22;
	}
	/* No VMCS: 7.x's inline nested_vmx_vmexit() reads the exit instruction length
	 * with VMREAD unless the entry failed; marked so, it passes 0 instead. */
	vmx->fail = 1;
	vmx->nested.msrs.ept_caps = H_EPT_WALK_4 | H_EPT_WALK_5 | H_EPT_2MB | H_EPT_1GB |
				    (n->execonly ? H_EPT_EXECUTE_ONLY : 0) | (n->ad ? H_EPT_AD : 0);
	return 0;
}

void h_vmx_init_mmu(void *v) { nested_ept_init_mmu_context(v); }
void h_vmx_exit(void *v) { nested_ept_uninit_mmu_context(v); }

/* Replaces the tree's nested_vmx_vmexit() (7.x: __nested_vmx_vmexit(), which the
 * inline nested_vmx_vmexit() calls): the exit is the result. */
H_VMX_VMEXIT_RET H_VMX_VMEXIT H_VMX_VMEXIT_PARAMS
{
	struct h_fault *f = h_state.exit;

	if (!f)
		h_trap("nested_vmx_vmexit() outside a fault injection");
	f->to = "L1";
	f->has_eq = 1;
	f->exit_qualification = exit_qualification;
	if (vm_exit_reason == H_EXIT_REASON_EPT_VIOLATION)
		f->kind = "ept_violation";
	else if (vm_exit_reason == H_EXIT_REASON_EPT_MISCONFIG)
		f->kind = "ept_misconfig";
	else if (vm_exit_reason == H_EXIT_REASON_EXCEPTION_NMI) {
		f->kind = "pf_vmexit";
		f->has_eq = 0;
	} else
		f->kind = "vmexit";
}

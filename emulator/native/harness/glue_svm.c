/*
 * Appended to the tree's own preprocessed arch/x86/kvm/svm/nested.c.  L1's
 * view the MMU reads (vmcb01 CR4/EFER, nCR3, the exception intercepts) is
 * written here; the MMU set-up is the tree's nested_svm_init_mmu_context().
 * nested_svm_vmexit() is replaced (see build.py REPLACED).
 */
#include "harness.h"
#include "layout.h"

#define H_SVM_EXIT_NPF 0x400

/* L1's VMCB and the one L2 runs on.  6.x: vmcb01 and nested.vmcb02, svm->vmcb
 * switched between them.  A tree without them (5.10) runs both on svm->vmcb and
 * keeps L1's state in nested.hsave, where its nested_svm_init_mmu_context() reads
 * L1's CR4/EFER. */
#ifdef H_HAS_vcpu_svm__vmcb01
#define H_SVM_L1(svm) ((svm)->vmcb01.ptr)
#define H_SVM_L2(svm) ((svm)->nested.vmcb02.ptr)
#else
#define H_SVM_L1(svm) ((svm)->nested.hsave)
#define H_SVM_L2(svm) ((svm)->vmcb)
#endif

unsigned long h_svm_vcpu_size(void) { return sizeof(struct vcpu_svm); }
unsigned long h_svm_kvm_size(void) { return sizeof(struct kvm_svm); }
void *h_svm_nested_ops(void) { return &svm_nested_ops; }

int h_svm_entry(void *v, struct h_nested *n)
{
	struct kvm_vcpu *vcpu = v;
	struct vcpu_svm *svm = to_svm(vcpu);

	if (!H_SVM_L1(svm))
		H_SVM_L1(svm) = h_zalloc(4096);
	if (!H_SVM_L2(svm))
		H_SVM_L2(svm) = h_zalloc(4096);
	/* L1's CR4/EFER at VMRUN: NPT takes its format from them. */
	H_SVM_L1(svm)->save.cr4 = vcpu->arch.cr4;
	H_SVM_L1(svm)->save.efer = vcpu->arch.efer;
	svm->vmcb = H_SVM_L2(svm);
	memset(&svm->nested.ctl, 0, sizeof(svm->nested.ctl));
	svm->nested.ctl.nested_cr3 = n->root;
	if (n->pf_intercept)
		svm->nested.ctl.intercepts[INTERCEPT_EXCEPTION] |= 1u << 14;
	return 0;
}

void h_svm_init_mmu(void *v)
{
	to_svm((struct kvm_vcpu *)v)->vmcb->control.exit_code = 0;
	nested_svm_init_mmu_context(v);
}

void h_svm_exit(void *v)
{
	struct vcpu_svm *svm = to_svm((struct kvm_vcpu *)v);

	nested_svm_uninit_mmu_context(v);
#ifdef H_HAS_vcpu_svm__vmcb01
	svm->vmcb = H_SVM_L1(svm);
#else
	(void)svm;
#endif
}

/* Replaces the tree's nested_svm_vmexit() (int in 6.1, void in 7.x): the exit is
 * the result. */
H_SVM_VMEXIT_RET H_SVM_VMEXIT H_SVM_VMEXIT_PARAMS
{
	struct h_fault *f = h_state.exit;
	struct vmcb *vmcb = svm->vmcb;

	if (!f)
		h_trap("nested_svm_vmexit() outside a fault injection");
	f->to = "L1";
	f->kind = vmcb->control.exit_code == H_SVM_EXIT_NPF ? "npf" : "vmexit";
	f->has_info = 1;
	f->exit_info_1 = vmcb->control.exit_info_1;
	f->exit_info_2 = vmcb->control.exit_info_2;
	/* The next fault starts from a fresh VMCB exit code, as after a real VM-exit. */
	vmcb->control.exit_code = 0;
	return (H_SVM_VMEXIT_RET)0;
}

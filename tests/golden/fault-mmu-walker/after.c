// SPDX-License-Identifier: GPL-2.0
/*
 * vcpu->arch.mmu used as a walker goes through ->w; right after it is set to
 * &guest_mmu (nested EPT/NPT set-up) it is the nGPA walker.
 */
#include <linux/kvm_host.h>

unsigned long get_l1_tdp_root(struct kvm_vcpu *vcpu);

void deliver_fault(struct kvm_vcpu *vcpu, struct x86_exception *fault)
{
	vcpu->arch.mmu->w->inject_page_fault(vcpu, fault, false);
}

void nested_tdp_init(struct kvm_vcpu *vcpu)
{
	vcpu->arch.mmu = &vcpu->arch.guest_mmu;
	vcpu->arch.ngpa_walk.get_guest_pgd = get_l1_tdp_root;
}

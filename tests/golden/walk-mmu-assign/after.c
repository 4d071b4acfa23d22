// SPDX-License-Identifier: GPL-2.0
/* There is no pointer left to switch on nested entry and exit. */
#include <linux/kvm_host.h>

void enter_l2_with_tdp(struct kvm_vcpu *vcpu)
{
	vcpu->arch.mmu = &vcpu->arch.guest_mmu;
}

void leave_l2(struct kvm_vcpu *vcpu)
{
	vcpu->arch.mmu = &vcpu->arch.root_mmu;
}

// SPDX-License-Identifier: GPL-2.0
/* A walker field of guest_mmu is its walker's: guest_mmu.w == &ngpa_walk. */
#include <linux/kvm_host.h>

unsigned long get_l1_tdp_root(struct kvm_vcpu *vcpu);

void setup_l1_tdp_walk(struct kvm_vcpu *vcpu)
{
	vcpu->arch.guest_mmu.get_guest_pgd = get_l1_tdp_root;
}

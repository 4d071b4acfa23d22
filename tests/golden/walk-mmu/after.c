// SPDX-License-Identifier: GPL-2.0
/* walk_mmu, the pointer to the context that translates GVAs, is the GVA walker. */
#include <linux/kvm_host.h>

unsigned long guest_cr3(struct kvm_vcpu *vcpu)
{
	return vcpu->arch.gva_walk.get_guest_pgd(vcpu);
}

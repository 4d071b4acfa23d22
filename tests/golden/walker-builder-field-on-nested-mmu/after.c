// SPDX-License-Identifier: GPL-2.0
/* nested_mmu built no tables: a write of a builder field of it had no reader. */
#include <linux/kvm_host.h>

void init_nested_walk(struct kvm_vcpu *vcpu)
{
	vcpu->arch.gva_walk.get_pdptr = NULL;
}

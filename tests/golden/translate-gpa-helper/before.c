// SPDX-License-Identifier: GPL-2.0-only
/* 5.x: the nested GPA stage is a hook of struct kvm_mmu, set once per MMU. */
#include "mmu.h"

gpa_t translate_nested_gpa(struct kvm_vcpu *vcpu, gpa_t gpa, u64 access,
			   struct x86_exception *exception);

static gpa_t golden_table_gpa(struct kvm_vcpu *vcpu, struct kvm_mmu *mmu, gpa_t table,
			      u64 access, struct x86_exception *fault)
{
	return mmu->translate_gpa(vcpu, table, access, fault);
}

void golden_create(struct kvm_vcpu *vcpu)
{
	vcpu->arch.nested_mmu.translate_gpa = translate_nested_gpa;
}

gpa_t golden_nested(struct kvm_vcpu *vcpu, gpa_t gva, struct x86_exception *fault)
{
	return golden_table_gpa(vcpu, vcpu->arch.walk_mmu, gva, 0, fault);
}

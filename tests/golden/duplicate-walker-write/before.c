// SPDX-License-Identifier: GPL-2.0
/* Two old members that became the same walker: their identical writes are one. */
#include <linux/kvm_host.h>

unsigned long get_guest_cr3(struct kvm_vcpu *vcpu);
void kvm_inject_page_fault(struct kvm_vcpu *vcpu, struct x86_exception *fault, bool from_hardware);

static bool tdp_enabled;

static inline bool mmu_is_nested(struct kvm_vcpu *vcpu)
{
	return vcpu->arch.mmu == &vcpu->arch.guest_mmu;
}

static void init_kvm_tdp_mmu(struct kvm_vcpu *vcpu, union kvm_cpu_role cpu_role)
{
	struct kvm_mmu *context = &vcpu->arch.root_mmu;

	context->root_role.level = cpu_role.base.level;
}

static void init_kvm_nested_mmu(struct kvm_vcpu *vcpu, union kvm_cpu_role new_mode)
{
	struct kvm_mmu *g_context = &vcpu->arch.nested_mmu;

	g_context->cpu_role.as_u32 = new_mode.as_u32;
	g_context->get_guest_pgd = get_guest_cr3;
	g_context->inject_page_fault = kvm_inject_page_fault;
}

static void kvm_init_shadow_mmu(struct kvm_vcpu *vcpu, union kvm_cpu_role cpu_role)
{
	struct kvm_mmu *context = &vcpu->arch.root_mmu;

	context->root_role.level = cpu_role.base.level;
}

static void init_kvm_softmmu(struct kvm_vcpu *vcpu, union kvm_cpu_role cpu_role)
{
	struct kvm_mmu *context = &vcpu->arch.root_mmu;

	kvm_init_shadow_mmu(vcpu, cpu_role);

	context->get_guest_pgd     = get_guest_cr3;
	context->inject_page_fault = kvm_inject_page_fault;
}

void kvm_init_mmu(struct kvm_vcpu *vcpu)
{
	union kvm_cpu_role cpu_role = { .as_u32 = 1 };

	if (mmu_is_nested(vcpu))
		init_kvm_nested_mmu(vcpu, cpu_role);
	else if (tdp_enabled)
		init_kvm_tdp_mmu(vcpu, cpu_role);
	else
		init_kvm_softmmu(vcpu, cpu_role);
}

/* root_mmu and nested_mmu both become the gva walker: one invalidation. */
void kvm_mmu_after_set_cpuid(struct kvm_vcpu *vcpu)
{
	vcpu->arch.root_mmu.cpu_role.ext.valid = 0;
	vcpu->arch.guest_mmu.cpu_role.ext.valid = 0;
	vcpu->arch.nested_mmu.cpu_role.ext.valid = 0;
}

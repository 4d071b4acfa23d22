// SPDX-License-Identifier: GPL-2.0
/* A function handed the same walker of its vCPU at every call names it. */
#include <linux/kvm_host.h>

static void __reset_rsvds_bits_mask_ept(struct rsvd_bits_validate *rsvd_check,
					bool execonly)
{
	rsvd_check->bad_mt_xwr = execonly ? 0 : 1;
}

static void reset_rsvds_bits_mask_ept(struct kvm_vcpu *vcpu,
		struct kvm_mmu *context, bool execonly)
{
	__reset_rsvds_bits_mask_ept(&context->guest_rsvd_check, execonly);
}

void kvm_init_shadow_ept_mmu(struct kvm_vcpu *vcpu, bool execonly)
{
	struct kvm_mmu *context = &vcpu->arch.guest_mmu;

	context->cpu_role.base.level = 4;
	context->root_role.level = 4;
	reset_rsvds_bits_mask_ept(vcpu, context, execonly);
}

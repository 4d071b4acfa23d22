// SPDX-License-Identifier: GPL-2.0
/* A caller that tests nesting only to call the nested translation hook calls
 * kvm_translate_gpa(), which makes the test itself, with the GVA walker. */
#include <linux/kvm_host.h>

#define INVALID_GPA	(~(gpa_t)0)

struct x86_exception;

struct kvm_x86_nested_ops {
	gpa_t (*translate_nested_gpa)(struct kvm_vcpu *vcpu, gpa_t gpa, u64 access,
				      struct x86_exception *exception);
};

struct kvm_x86_ops {
	struct kvm_x86_nested_ops *nested_ops;
};

extern struct kvm_x86_ops kvm_x86_ops;

bool mmu_is_nested(struct kvm_vcpu *vcpu);

static inline gpa_t kvm_translate_gpa(struct kvm_vcpu *vcpu, struct kvm_mmu *mmu, gpa_t gpa,
				      u64 access, struct x86_exception *exception)
{
	if (mmu != &vcpu->arch.nested_mmu)
		return gpa;
	return kvm_x86_ops.nested_ops->translate_nested_gpa(vcpu, gpa, access, exception);
}

struct hypercall {
	bool fast;
	gpa_t ingpa;
};

int hv_flush_tlb(struct kvm_vcpu *vcpu, struct hypercall *hc)
{
	if (!hc->fast && mmu_is_nested(vcpu)) {
		hc->ingpa = kvm_x86_ops.nested_ops->translate_nested_gpa(
					vcpu, hc->ingpa, 0, NULL);
		if (hc->ingpa == INVALID_GPA)
			return 1;
	}
	return 0;
}

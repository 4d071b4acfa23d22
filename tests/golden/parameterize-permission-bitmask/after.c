// SPDX-License-Identifier: GPL-2.0
/* A walker function that reads the walker only through role accessors and its
 * format is split into the format's function and the walker's call of it. */
#include <linux/kvm_host.h>

static inline bool is_cr0_wp(struct kvm_pagewalk *w)
{
	return w->cpu_role.base.cr0_wp;
}

static void __update_permission_bitmask(struct kvm_page_format *fmt, bool ept,
					bool cr0_wp)
{
	unsigned index;
	const u16 w = 2;

	for (index = 0; index < 16; ++index)
		fmt->permissions[index] = (cr0_wp && !ept) ? w : 0;
}

static void update_permission_bitmask(struct kvm_pagewalk *w, bool ept)
{
	__update_permission_bitmask(&w->fmt, ept,
				    is_cr0_wp(w));
}

void reset_guest_paging_metadata(struct kvm_vcpu *vcpu, struct kvm_pagewalk *w)
{
	update_permission_bitmask(w, false);
}

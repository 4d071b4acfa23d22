// SPDX-License-Identifier: GPL-2.0
/* struct kvm_page_format absorbs the reserved-bit masks. */
#include <linux/kvm_host.h>

unsigned long rsvd_masks_size(void)
{
	return sizeof(struct kvm_page_format);
}

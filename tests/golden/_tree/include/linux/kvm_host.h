/* SPDX-License-Identifier: GPL-2.0 */
#ifndef __MINI_LINUX_KVM_HOST_H
#define __MINI_LINUX_KVM_HOST_H

#include <asm/kvm_host.h>

struct kvm_vcpu {
	int vcpu_id;
	struct kvm_vcpu_arch arch;
};

#endif

/*
 * Appended to the tree's own preprocessed arch/x86/kvm/cpuid.c.  The guest
 * CPUID the Python model assumes: an Intel CPU with PSE-36, NX, 1 GiB pages,
 * long mode, SMEP, SMAP, PKU and LA57, MAXPHYADDR from the trace.  Installed
 * through the kernel's own kvm_set_cpuid(), as KVM_SET_CPUID2 does.
 *
 * The host supports what the guest is given: kvm_cpu_caps (what kvm_set_cpu_caps()
 * finds on the host at module load) gets the guest's feature bits first.  7.x
 * intersects guest CPUID with it (vcpu->arch.cpu_caps): left zero, shadow paging
 * would treat every 1 GiB page as reserved (guest_cpu_cap_has(GBPAGES) false).
 */
#include "harness.h"
#include "layout.h"

void h_cpuid_setup(void *v, int maxphyaddr)
{
	static const struct { u32 fn, eax, ebx, ecx, edx; } leaves[] = {
		{ 0x0, 0xd, 0x756e6547, 0x6c65746e, 0x49656e69 },   /* GenuineIntel */
		/* PSE(3) PAE(6) PGE(13) PSE36(17) */
		{ 0x1, 0x000306a0, 0, 0, (1u << 3) | (1u << 6) | (1u << 13) | (1u << 17) },
		/* SMEP(7) SMAP(20); PKU(3) LA57(16) */
		{ 0x7, 0, (1u << 7) | (1u << 20), (1u << 3) | (1u << 16), 0 },
		{ 0x80000000, 0x80000008, 0, 0, 0 },
		/* NX(20) GBPAGES(26) LM(29) */
		{ 0x80000001, 0, 0, 0, (1u << 20) | (1u << 26) | (1u << 29) },
		{ 0x80000008, 0, 0, 0, 0 },
	};
	int n = sizeof(leaves) / sizeof(leaves[0]);
	int caps = sizeof(kvm_cpu_caps) / sizeof(kvm_cpu_caps[0]);
	struct kvm_cpuid_entry2 *e2 = h_zalloc(n * sizeof(*e2));
	int c, i, r;

	for (i = 0; i < n; i++) {
		e2[i].function = leaves[i].fn;
		e2[i].eax = leaves[i].eax;
		e2[i].ebx = leaves[i].ebx;
		e2[i].ecx = leaves[i].ecx;
		e2[i].edx = leaves[i].edx;
	}
	for (c = 0; c < caps && c < (int)(sizeof(reverse_cpuid) / sizeof(reverse_cpuid[0])); c++)
		for (i = 0; i < n; i++)
			if (leaves[i].fn && reverse_cpuid[c].function == leaves[i].fn &&
			    reverse_cpuid[c].index == 0) {
				u32 regs[4] = { leaves[i].eax, leaves[i].ebx, leaves[i].ecx,
						leaves[i].edx };
				kvm_cpu_caps[c] |= regs[reverse_cpuid[c].reg & 3];
			}
	e2[n - 1].eax = maxphyaddr | (48 << 8);
#ifdef H_DEFINED_kvm_set_cpuid
	r = kvm_set_cpuid(v, e2, n);
#else
	/* A tree without kvm_set_cpuid() (5.10): the ioctl's own function, which copies
	 * the entries "from user" (vmemdup_user(), harness.c) and installs them. */
	{
		struct kvm_cpuid2 cpuid = { .nent = n };

		r = kvm_vcpu_ioctl_set_cpuid2(v, &cpuid, e2);
	}
#endif
	if (r)
		h_trap("the tree's KVM_SET_CPUID2 refused the harness CPUID");
}

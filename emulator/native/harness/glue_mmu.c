/* Appended to the tree's own preprocessed arch/x86/kvm/mmu/mmu.c. */
#include "harness.h"

void h_mmu_setup(int tdp)
{
	/* What vmx_hardware_setup() passes with EPT (4-level) and 1 GiB pages. */
	kvm_configure_mmu(tdp, 0, tdp ? 4 : 0, PG_LEVEL_1G);
}

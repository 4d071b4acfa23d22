/* Appended to the tree's own preprocessed arch/x86/kvm/mmu/mmu.c. */
#include "harness.h"

void h_mmu_setup(int tdp)
{
	/* What vmx_hardware_setup() passes with EPT (4-level) and 1 GiB pages. */
	kvm_configure_mmu(tdp, 0, tdp ? 4 : 0, PG_LEVEL_1G);
}

/*
 * A running vCPU has a root for its current MMU.  A shadow MMU (shadow
 * paging, or nested EPT/NPT) gets an empty one the first time an event
 * needs it: no shadow entries, so invalidations find nothing to sync (shadow
 * page tables are not modelled); kvm_mmu_unload() frees it as its own.
 */
void h_mmu_running(void *v)
{
	struct kvm_vcpu *vcpu = v;
	struct kvm_mmu *mmu = vcpu->arch.mmu;
	struct kvm_mmu_page *sp;
	void *page;

	if (mmu->root_role.direct || mmu->root.hpa != (hpa_t)~0ull)
		return;
	page = h_kernel_page();
	sp = h_zalloc(sizeof(*sp));
	sp->spt = page;
	sp->role = mmu->root_role;
	sp->root_count = 1;
	if (sizeof(struct page) != 64)
		h_trap("struct page is not 64 bytes: the harness's vmemmap does not fit");
	set_page_private((struct page *)h_page_struct(page), (unsigned long)sp);
	mmu->root.hpa = virt_to_phys(page);
}


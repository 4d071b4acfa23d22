/* Appended to the tree's own preprocessed arch/x86/kvm/mmu/mmu.c. */
#include "harness.h"
#include "layout.h"

/* The current root and role of an MMU, by the members the tree's struct kvm_mmu has
 * (6.x: root.hpa and root_role; 5.10: root_hpa, mmu_role.base and direct_map;
 * its mmu_role is on the walker after a rewrite: layout.h). */
#ifdef H_HAS_kvm_mmu__root_role
#define H_MMU_ROOT_HPA(mmu) ((mmu)->root.hpa)
#define H_MMU_ROOT_ROLE(mmu) ((mmu)->root_role)
#define H_MMU_DIRECT(mmu) ((mmu)->root_role.direct)
#else
#define H_MMU_ROOT_HPA(mmu) ((mmu)->root_hpa)
#define H_MMU_ROOT_ROLE(mmu) (H_MMU_MMU_ROLE(mmu).base)
#define H_MMU_DIRECT(mmu) ((mmu)->direct_map)
#endif

void h_mmu_setup(int tdp)
{
	/* What vmx_hardware_setup() passes with EPT (4-level) and 1 GiB pages (a tree
	 * without a forced root level takes the maximum level alone). */
#if H_NARGS_kvm_configure_mmu == 3
	kvm_configure_mmu(tdp, tdp ? 4 : 0, PG_LEVEL_1G);
#else
	kvm_configure_mmu(tdp, 0, tdp ? 4 : 0, PG_LEVEL_1G);
#endif
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

	if (H_MMU_DIRECT(mmu) || H_MMU_ROOT_HPA(mmu) != (hpa_t)~0ull)
		return;
	/* A PAE shadow root is the four pae_root entries: none present, as
	 * mmu_alloc_shadow_roots() leaves them for PDPTEs it does not shadow (6.x
	 * initialises them so, INVALID_PAE_ROOT being 0; 5.10 fills them with
	 * INVALID_PAGE, which its walks and frees would take for a root). */
	if (mmu->pae_root)
		memset(mmu->pae_root, 0, 4 * sizeof(mmu->pae_root[0]));
	page = h_kernel_page();
	sp = h_zalloc(sizeof(*sp));
	sp->spt = page;
	sp->role = H_MMU_ROOT_ROLE(mmu);
	sp->root_count = 1;
	if (sizeof(struct page) != 64)
		h_trap("struct page is not 64 bytes: the harness's vmemmap does not fit");
	set_page_private((struct page *)h_page_struct(page), (unsigned long)sp);
	H_MMU_ROOT_HPA(mmu) = virt_to_phys(page);
}

/*
 * The native engine's harness: what the kernel would get from the rest of
 * the kernel and from the hardware, for KVM's own MMU code compiled as user
 * space.  Plain C, no kernel headers: kernel functions are defined here by
 * name with their calling conventions; glue_*.c (appended to the kernel's
 * own translation units) is the only code that sees kernel types.
 *
 * Protocol: binary events on stdin (64-bit words), one JSON object per line
 * on stdout.  See docs/native-engine.md.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include "harness.h"

struct h_state h_state;

/* ---- guest memory: L1 GPA space, sparse 4 KiB pages ------------------- */
/* Every GPA exists and reads as zero until written, as in the Python model. */
/* dirty: 64-byte lines that may be non-zero (written by the trace, or found changed
 * by mem_sync); exposed: KVM got the page's address and may have written anywhere. */
struct h_page { h_u64 gfn; unsigned char *hva, *shadow; uint64_t dirty; int exposed; };
static struct h_page *pages;
static unsigned long npages, cap_pages;

static unsigned long h_hash(h_u64 gfn) { return (gfn * 0x9E3779B97F4A7C15ull) >> 20; }

/*
 * Everything KVM allocates belongs to the one VM/vCPU of the current trace
 * episode: a bump allocator, rewound at every reset (no page faults from
 * fresh memory at every episode), zeroed as it is handed out.
 */
#define ZONE_SIZE (64ul << 20)
static unsigned char *zone;
static unsigned long zone_next;

void *h_zalloc(unsigned long size)
{
	if (!zone) {
		zone = mmap(NULL, ZONE_SIZE, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (zone == MAP_FAILED)
			h_bug("cannot map the allocation zone");
	}
	size = (size + 63) & ~63ul;
	if (zone_next + size > ZONE_SIZE)
		h_bug("harness allocation zone exhausted");
	void *p = zone + zone_next;
	zone_next += size;
	memset(p, 0, size);
	return p;
}

static unsigned long zone_base;       /* what the set-up allocated stays */
static void zone_reset(void) { zone_next = zone_base; }

void *h_page(void)
{
	void *p = NULL;
	if (posix_memalign(&p, 4096, 4096))
		h_bug("out of memory");
	memset(p, 0, 4096);
	return p;
}

/* Freed guest pages (page + copy) are kept for the next episode. */
static unsigned char **spare;
static unsigned long nspare, capspare;

/*
 * A page goes back to the spare list zeroed, hva and copy: only its dirty lines,
 * unless KVM wrote somewhere mem_sync() did not see (page and copy differ).
 */
static void page_clean(struct h_page *p)
{
	if (p->exposed && memcmp(p->hva, p->shadow, 4096)) {
		memset(p->hva, 0, 4096);
		memset(p->shadow, 0, 4096);
		return;
	}
	for (uint64_t d = p->dirty; d; d &= d - 1) {
		unsigned off = __builtin_ctzll(d) * 64;
		memset(p->hva + off, 0, 64);
		memset(p->shadow + off, 0, 64);
	}
}

static void mem_reset(void)
{
	for (unsigned long i = 0; i < cap_pages; i++)
		if (pages[i].hva) {
			if (nspare + 2 > capspare) {
				capspare = capspare ? 2 * capspare : 1024;
				spare = realloc(spare, capspare * sizeof(*spare));
			}
			page_clean(&pages[i]);
			spare[nspare++] = pages[i].hva;
			spare[nspare++] = pages[i].shadow;
		}
	if (cap_pages != 1024 || !pages) {
		free(pages);
		cap_pages = 1024;
		pages = calloc(cap_pages, sizeof(*pages));
	} else
		memset(pages, 0, cap_pages * sizeof(*pages));
	npages = 0;
}

/* Spare pages are zeroed when they are given back (page_clean()). */
static unsigned char *guest_page(void)
{
	if (nspare)
		return spare[--nspare];
	return h_page();
}

static struct h_page *mem_page(h_u64 gfn)
{
	unsigned long i = h_hash(gfn) & (cap_pages - 1);
	while (pages[i].hva) {
		if (pages[i].gfn == gfn)
			return &pages[i];
		i = (i + 1) & (cap_pages - 1);
	}
	if (2 * (npages + 1) > cap_pages) {
		struct h_page *old = pages;
		unsigned long oldcap = cap_pages;
		cap_pages *= 2;
		pages = calloc(cap_pages, sizeof(*pages));
		for (unsigned long j = 0; j < oldcap; j++)
			if (old[j].hva) {
				unsigned long k = h_hash(old[j].gfn) & (cap_pages - 1);
				while (pages[k].hva)
					k = (k + 1) & (cap_pages - 1);
				pages[k] = old[j];
			}
		free(old);
		return mem_page(gfn);
	}
	pages[i].gfn = gfn;
	pages[i].hva = guest_page();
	pages[i].shadow = guest_page();
	npages++;
	return &pages[i];
}

static unsigned long hva_for_kvm(h_u64 gfn);
unsigned long h_gfn_to_hva(h_u64 gfn) { return hva_for_kvm(gfn); }

/* ---- per-event results: A/D write-backs, notes, the touched GPA -------- */
#define MAX_LOG 256
static h_u64 ad_addr[MAX_LOG], ad_bits[MAX_LOG];
static int n_ad;
static h_u64 note_addr[MAX_LOG];
static int note_roots[MAX_LOG], n_notes;
static h_u64 touched_gpa;
static int warned;
static char bugmsg[512];

void h_set_touched_gpa(h_u64 gpa) { touched_gpa = gpa; }
h_u64 h_touched_gpa(void) { return touched_gpa; }
int h_warned(void) { return warned; }

void h_note_flush(h_u64 addr)
{
	if (n_notes < MAX_LOG) {
		note_addr[n_notes] = addr;
		/* kvm_mmu_invlpg() drops every root's entry, a fault only the current one. */
		note_roots[n_notes++] = h_state.event == H_EV_INVLPG ? 7 : 1;
	}
}

/* Pages whose address KVM obtained during this event (it may write only those). */
#define MAX_TOUCHED 64
static h_u64 touched[MAX_TOUCHED];      /* gfns: mem_page() may move its entries */
static int n_touched;

/*
 * A guest entry changed by KVM (an A/D write-back, followed by
 * mark_page_dirty()): diff the pages KVM got addresses of against their
 * copies, 4 bytes at a time so that 32-bit entries report their own
 * address.  The gfn KVM names is not used: for an L2 table it is an L2 GFN.
 */
static void mem_sync(h_u64 gfn_unused)
{
	for (int t = 0; t < n_touched; t++) {
		struct h_page *p = mem_page(touched[t]);
		uint32_t *now = (uint32_t *)p->hva, *was = (uint32_t *)p->shadow;
		for (int i = 0; i < 1024; i++) {
			if ((i & 63) == 0 && !memcmp(now + i, was + i, 256)) {
				i += 63;
				continue;
			}
			if (now[i] == was[i])
				continue;
			if (n_ad < MAX_LOG) {
				/* A 64-bit entry's A/D bits are in its low half. */
				ad_addr[n_ad] = (p->gfn << 12) + i * 4;
				ad_bits[n_ad++] = now[i] & ~was[i];
			}
			was[i] = now[i];
			p->dirty |= 1ull << (i >> 4);
		}
	}
}

static unsigned long hva_for_kvm(h_u64 gfn)
{
	struct h_page *p = mem_page(gfn);
	p->exposed = 1;
	int t;
	for (t = 0; t < n_touched && touched[t] != gfn; t++)
		;
	if (t == n_touched && n_touched < MAX_TOUCHED)
		touched[n_touched++] = gfn;
	return (unsigned long)p->hva;
}

static void mem_write(h_u64 addr, h_u64 val, int size)
{
	struct h_page *p = mem_page(addr >> 12);
	unsigned off = addr & 0xff8;
	p->dirty |= 1ull << (off >> 6);
	if (size == 8) {
		memcpy(p->hva + off, &val, 8);
		memcpy(p->shadow + off, &val, 8);
	} else {
		uint32_t v = val;
		off = addr & 0xffc;
		memcpy(p->hva + off, &v, 4);
		memcpy(p->shadow + off, &v, 4);
	}
}

static h_u64 mem_read(h_u64 addr, int size)
{
	struct h_page *p = mem_page(addr >> 12);
	if (size == 8) {
		h_u64 v;
		memcpy(&v, p->hva + (addr & 0xff8), 8);
		return v;
	}
	uint32_t v;
	memcpy(&v, p->hva + (addr & 0xffc), 4);
	return v;
}

/* ---- bugs and traps ------------------------------------------------------ */
static sigjmp_buf event_env;
static int in_event;

void h_bug(const char *what)
{
	snprintf(bugmsg, sizeof(bugmsg), "%s", what);
	if (!in_event) {
		fprintf(stderr, "native engine: %s\n", what);
		exit(3);
	}
	siglongjmp(event_env, 1);
}

static int is_error;
/* An event the trace cannot have here (as machine.Model raises): {"error": ...}. */
__attribute__((noreturn)) static void h_error(const char *what)
{
	is_error = 1;
	h_bug(what);
}

static char trapname[256];
void h_trap(const char *what)
{
	snprintf(trapname, sizeof(trapname), "%s", what);
	h_bug(what);
}

/* Generated stubs call this: a kernel function the harness does not provide. */
__attribute__((noreturn)) void h_stub_hit(const char *name)
{
	char buf[300];
	snprintf(buf, sizeof(buf), "stub %s called", name);
	h_trap(buf);
}

/* struct bug_entry layout, from the tree (glue_x86.c). */
extern void h_bug_layout(int *size, int *off_file, int *off_line, int *off_flags);
extern char __start___bug_table[], __stop___bug_table[];

static const char *sym_of(void *addr, char *buf, size_t n)
{
	Dl_info info;
	if (addr && dladdr(addr, &info) && info.dli_sname) {
		snprintf(buf, n, "%s+0x%lx", info.dli_sname,
			 (unsigned long)((char *)addr - (char *)info.dli_saddr));
		return buf;
	}
	snprintf(buf, n, "%p", addr);
	return buf;
}

/* file:line of the bug_entry E; its flags say whether it is a WARN. */
static void entry_site(char *e, char *out, size_t n, int *is_warning)
{
	int size, off_file, off_line, off_flags;
	h_bug_layout(&size, &off_file, &off_line, &off_flags);
	const char *file = "?";
	if (off_file >= 0) {
		int fd = *(int *)(e + off_file);
		file = e + off_file + fd;
	}
	unsigned line = *(unsigned short *)(e + off_line);
	unsigned flags = *(unsigned short *)(e + off_flags);
	*is_warning = flags & 1;
	snprintf(out, n, "%s:%u", file, line);
}

/* file:line and flags of a BUG()/WARN() site, or 0 if RIP is not one. */
static int bug_site(unsigned long rip, char *out, size_t n, int *is_warning)
{
	int size, off_file, off_line, off_flags;
	h_bug_layout(&size, &off_file, &off_line, &off_flags);
	for (char *e = __start___bug_table; e + size <= __stop___bug_table; e += size) {
		int disp = *(int *)e;
		if ((unsigned long)(e + disp) != rip)
			continue;
		entry_site(e, out, n, is_warning);
		return 1;
	}
	return 0;
}

static char warn_text[200];

static void record_warn(const char *where)
{
	if (!warned && !h_state.quiet)
		snprintf(bugmsg, sizeof(bugmsg), "%s: WARN%s%s", where,
			 warn_text[0] ? ": " : "", warn_text);
	warned |= !h_state.quiet;
	warn_text[0] = 0;
}

/*
 * x86-64 trees with HAVE_ARCH_BUG_FORMAT_ARGS (7.x) compile WARN(cond, fmt, ...) into a
 * call of static_call(WARN_trap)(bug_entry, args...) instead of a trapping instruction;
 * the kernel's __WARN_trap() reports it and returns.  The trampoline lands here, so such a
 * WARN is a result like any other rather than a call into a missing stub.
 */
void h_warn_trap(char *bug, ...)
{
	char where[256];
	int is_warning = 0;
	entry_site(bug, where, sizeof(where), &is_warning);
	record_warn(where);
}
asm(".text\n.globl __SCT__WARN_trap\n__SCT__WARN_trap:\n jmp h_warn_trap\n");

static void on_signal(int sig, siginfo_t *si, void *uc_)
{
	ucontext_t *uc = uc_;
	unsigned long rip = uc->uc_mcontext.gregs[REG_RIP];
	unsigned long rsp = uc->uc_mcontext.gregs[REG_RSP];
	char where[256], sym[200], msg[600];
	int is_warning = 0;

	if ((sig == SIGILL || sig == SIGTRAP) && bug_site(rip, where, sizeof(where), &is_warning)) {
		if (is_warning) {
			/* WARN: recorded as the event's result; execution goes on as in the kernel. */
			record_warn(where);
			unsigned char *ip = (unsigned char *)rip;
			uc->uc_mcontext.gregs[REG_RIP] += (ip[0] == 0x0f && ip[1] == 0x0b) ? 2 : 3;
			return;
		}
		snprintf(msg, sizeof(msg), "%s: BUG", where);
		h_bug(msg);
	}
	if (sig == SIGILL) {
		sym_of((void *)rip, sym, sizeof(sym));
		if (!strncmp(sym, "__SCT__", 7)) {
			/* A kvm_x86_ops hook the harness does not provide, or a NULL one. */
			snprintf(msg, sizeof(msg), "static call %s called but not provided",
				 sym + 7);
			*strchr(msg + 12, '+') = 0;
			strcat(msg, " (NULL hook)");
			h_trap(msg);
		}
	}
	if (sig == SIGSEGV && rip < 4096) {
		void *ret = *(void **)rsp;
		snprintf(msg, sizeof(msg), "call through NULL function pointer from %s",
			 sym_of(ret, sym, sizeof(sym)));
		h_bug(msg);
	}
	sym_of((void *)rip, sym, sizeof(sym));
	snprintf(msg, sizeof(msg), "%s in %s (address %p)", strsignal(sig), sym, si->si_addr);
	h_bug(msg);
}

/* ---- static calls: patch the trampoline, as arch_static_call_transform() does */
void __static_call_update(void *key, void *tramp, void *func)
{
	static unsigned long writable[64];
	static int nwritable;
	unsigned char *t = tramp;
	unsigned long page = (unsigned long)t & ~4095ul;
	int i;
	for (i = 0; i < nwritable && writable[i] != page; i++)
		;
	if (i == nwritable) {
		/* Trampolines are patched again at every vendor switch: once per page. */
		mprotect((void *)page, 8192, PROT_READ | PROT_WRITE | PROT_EXEC);
		if (nwritable < 64)
			writable[nwritable++] = page;
	}
	if (!func) {
		t[0] = 0x0f;        /* ud2: the SIGILL handler names the hook */
		t[1] = 0x0b;
		return;
	}
	int32_t rel = (int32_t)((long)func - (long)(t + 5));
	t[0] = 0xe9;
	memcpy(t + 1, &rel, 4);
}

long __static_call_return0(void) { return 0; }

/* ---- kernel services (names and calling conventions of the kernel's) ------ */
void *__kmalloc(size_t size, unsigned flags) { return h_zalloc(size); }
void *kmalloc_trace(void *cache, unsigned flags, size_t size) { return h_zalloc(size); }
void *__kmalloc_noprof(size_t size, unsigned flags) { return h_zalloc(size); }
void *kvmalloc_node(size_t size, unsigned flags, int node) { return h_zalloc(size); }
void *__kvmalloc_node_noprof(size_t size, unsigned flags, int node) { return h_zalloc(size); }
void *__vcalloc(size_t n, size_t size, unsigned flags) { return h_zalloc(n * size); }
void kfree(const void *p) { }
void kvfree(const void *p) { }
struct h_cache { unsigned long size; };
void *kmem_cache_create(const char *name, unsigned size, unsigned align, unsigned long flags,
			void *ctor)
{
	struct h_cache *c = h_zalloc(sizeof(*c));
	c->size = size;
	return c;
}
void *kmem_cache_alloc(struct h_cache *c, unsigned flags) { return h_zalloc(c ? c->size : 4096); }
void kmem_cache_free(void *c, void *p) { }
void *kmem_cache_alloc_noprof(struct h_cache *c, unsigned flags) { return kmem_cache_alloc(c, flags); }
/*
 * Kernel pages (page tables KVM allocates: pae_root, shadow roots) come from
 * one arena with real struct pages, so that page_address(), virt_to_page()
 * and page_private() work: page_offset_base keeps its kernel value (then
 * kvm_is_error_hva(), hva >= PAGE_OFFSET, holds for no user address), pfns
 * are (va - page_offset_base) >> 12 modulo 2^64, and vmemmap_base is chosen
 * so that the arena's struct pages (64 bytes each) land in a mapped array.
 */
#define ARENA_PAGES 16384
unsigned long page_offset_base = 0xffff888000000000ul;
unsigned long vmemmap_base;
static unsigned char *arena;
static unsigned long arena_next;

static void arena_init(void)
{
	arena = mmap(NULL, ARENA_PAGES * 4096ul, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	void *pages_md = mmap(NULL, ARENA_PAGES * 64ul, PROT_READ | PROT_WRITE,
			      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (arena == MAP_FAILED || pages_md == MAP_FAILED) {
		fprintf(stderr, "native engine: cannot map the page arena\n");
		exit(3);
	}
	unsigned long pfn0 = ((unsigned long)arena - page_offset_base) >> 12;
	vmemmap_base = (unsigned long)pages_md - pfn0 * 64;
}

/* A new vCPU: the previous one's kernel pages are reused. */
static void arena_reset(void) { arena_next = 0; }

static void *arena_pages(unsigned order)
{
	unsigned long n = 1ul << order;
	if (arena_next + n > ARENA_PAGES)
		h_bug("harness page arena exhausted");
	unsigned char *p = arena + arena_next * 4096;
	unsigned long pfn = ((unsigned long)p - page_offset_base) >> 12;
	memset(p, 0, n * 4096);
	memset((void *)(vmemmap_base + pfn * 64), 0, n * 64);
	arena_next += n;
	return p;
}

void *h_kernel_page(void) { return arena_pages(0); }
void *h_page_struct(void *va)
{
	return (void *)(vmemmap_base + (((unsigned long)va - page_offset_base) >> 12) * 64);
}

void *alloc_pages(unsigned gfp, unsigned order)
{
	unsigned long pfn = ((unsigned long)arena_pages(order) - page_offset_base) >> 12;
	return (void *)(vmemmap_base + pfn * 64);
}
unsigned long get_zeroed_page(unsigned gfp) { return (unsigned long)arena_pages(0); }
/* 5.10 (NUMA): alloc_pages() is an inline calling alloc_pages_current(). */
void *alloc_pages_current(unsigned gfp, unsigned order) { return alloc_pages(gfp, order); }
/* 7.x names (memory allocation profiling): the size is the first argument of the
 * kmalloc family whatever CONFIG_SLAB_BUCKETS adds after it. */
void *alloc_pages_noprof(unsigned gfp, unsigned order) { return alloc_pages(gfp, order); }
void *__alloc_pages_noprof(unsigned gfp, unsigned order, int nid, void *nodemask)
{
	return alloc_pages(gfp, order);
}
unsigned long get_zeroed_page_noprof(unsigned gfp) { return (unsigned long)arena_pages(0); }
unsigned long get_free_pages_noprof(unsigned gfp, unsigned order)
{
	return (unsigned long)arena_pages(order);
}
void *__kmalloc_cache_noprof(void *cache, unsigned flags, size_t size) { return h_zalloc(size); }
void *__vcalloc_noprof(size_t n, size_t size, unsigned flags) { return h_zalloc(n * size); }
unsigned long __get_free_pages(unsigned gfp, unsigned order)
{
	return (unsigned long)arena_pages(order);
}
void free_pages(unsigned long addr, unsigned order) { }
void __free_pages(void *page, unsigned order) { }
int set_memory_decrypted(unsigned long addr, int n) { return 0; }
int set_memory_encrypted(unsigned long addr, int n) { return 0; }

/* Locks, RCU, scheduling: one thread, nothing to wait for. */
void _raw_spin_lock(void *l) { }
void _raw_spin_unlock(void *l) { }
void _raw_spin_lock_irq(void *l) { }
void _raw_spin_unlock_irq(void *l) { }
unsigned long _raw_spin_lock_irqsave(void *l) { return 0; }
void _raw_spin_unlock_irqrestore(void *l, unsigned long f) { }
void _raw_read_lock(void *l) { }
void _raw_read_unlock(void *l) { }
unsigned long _raw_read_lock_irqsave(void *l) { return 0; }
void _raw_read_unlock_irqrestore(void *l, unsigned long f) { }
void _raw_write_lock(void *l) { }
void _raw_write_unlock(void *l) { }
int __cond_resched_rwlock_write(void *l) { return 0; }
int __cond_resched_rwlock_read(void *l) { return 0; }
void mutex_lock(void *m) { }
void mutex_unlock(void *m) { }
void down_read(void *s) { }
void up_read(void *s) { }
void down_write(void *s) { }
void up_write(void *s) { }
void __rcu_read_lock(void) { }
void __rcu_read_unlock(void) { }
int __srcu_read_lock(void *s) { return 0; }
void __srcu_read_unlock(void *s, int i) { }
void synchronize_srcu(void *s) { }
int __cond_resched(void) { return 0; }
int _cond_resched(void) { return 0; }           /* 5.10 */
void static_key_slow_inc(void *k) { }
void static_key_slow_dec(void *k) { }
int ___ratelimit(void *rs, const char *func) { return 0; }
int _printk(const char *fmt, ...) { return 0; }
void __warn_printk(const char *fmt, ...)
{
	/* The message of the WARN() that follows; kernel %p extensions are not expanded. */
	snprintf(warn_text, sizeof(warn_text), "%s", fmt);
	char *nl = strchr(warn_text, '\n');
	if (nl)
		*nl = 0;
}
void kvm_vm_bugged(void *kvm) { }
bool kvm_make_all_cpus_request(void *kvm, unsigned req) { return true; }
void kvm_vcpu_kick(void *vcpu) { }
void kvm_flush_remote_tlbs(void *kvm) { }
int kvm_mmu_topup_memory_cache(void *mc, int min) { return 0; }
int __kvm_mmu_topup_memory_cache(void *mc, int cap, int min) { return 0; }
int kvm_mmu_memory_cache_nr_free_objects(void *mc) { return 1 << 20; }
void *kvm_mmu_memory_cache_alloc(void *mc) { return arena_pages(0); }
void kvm_mmu_free_memory_cache(void *mc) { }
void kvm_pmu_refresh(void *vcpu) { }
void kvm_pmu_ops_update(const void *ops) { }
void kvm_hv_set_cpuid(void *vcpu, bool hyperv_enabled) { }
void kvm_update_pv_runtime(void *vcpu) { }
void kvm_apic_set_version(void *vcpu) { }
void kvm_clear_async_pf_completion_queue(void *vcpu) { }

/* Guest memory behind the memslot helpers (kvm_main.c). */
unsigned long kvm_vcpu_gfn_to_hva_prot(void *vcpu, h_u64 gfn, bool *writable)
{
	if (writable)
		*writable = true;
	return h_gfn_to_hva(gfn);
}
unsigned long kvm_vcpu_gfn_to_hva(void *vcpu, h_u64 gfn) { return h_gfn_to_hva(gfn); }
unsigned long gfn_to_hva(void *kvm, h_u64 gfn) { return h_gfn_to_hva(gfn); }
/* 7.x walks through a memslot: one zeroed slot (id 0, no flags) covers every GFN. */
static char the_memslot[1024] __attribute__((aligned(64)));
void *kvm_vcpu_gfn_to_memslot(void *vcpu, h_u64 gfn) { return the_memslot; }
void *gfn_to_memslot(void *kvm, h_u64 gfn) { return the_memslot; }
unsigned long gfn_to_hva_memslot_prot(void *slot, h_u64 gfn, bool *writable)
{
	if (writable)
		*writable = true;
	return h_gfn_to_hva(gfn);
}
unsigned long gfn_to_hva_memslot(void *slot, h_u64 gfn) { return h_gfn_to_hva(gfn); }
static int read_gpa(h_u64 gpa, void *data, unsigned long len)
{
	touched_gpa = gpa;
	while (len) {
		unsigned off = gpa & 4095, n = 4096 - off < len ? 4096 - off : len;
		memcpy(data, (char *)h_gfn_to_hva(gpa >> 12) + off, n);
		data = (char *)data + n;
		gpa += n;
		len -= n;
	}
	return 0;
}
int kvm_vcpu_read_guest_page(void *vcpu, h_u64 gfn, void *data, int offset, int len)
{
	return read_gpa((gfn << 12) + offset, data, len);
}
int kvm_read_guest_page(void *kvm, h_u64 gfn, void *data, int offset, int len)
{
	return read_gpa((gfn << 12) + offset, data, len);
}
int kvm_vcpu_read_guest(void *vcpu, h_u64 gpa, void *data, unsigned long len)
{
	return read_gpa(gpa, data, len);
}
int kvm_read_guest(void *kvm, h_u64 gpa, void *data, unsigned long len)
{
	return read_gpa(gpa, data, len);
}
int kvm_vcpu_read_guest_atomic(void *vcpu, h_u64 gpa, void *data, unsigned long len)
{
	return read_gpa(gpa, data, len);
}
/* Writes through a translated address are probes (implicit_write): nothing is stored. */
int kvm_vcpu_write_guest(void *vcpu, h_u64 gpa, const void *data, unsigned long len)
{
	touched_gpa = gpa;
	return 0;
}
int kvm_write_guest(void *kvm, h_u64 gpa, const void *data, unsigned long len)
{
	touched_gpa = gpa;
	return 0;
}
/* Called after each A/D write-back into a guest table. */
void kvm_vcpu_mark_page_dirty(void *vcpu, h_u64 gfn) { mem_sync(gfn); }
void mark_page_dirty_in_slot(void *kvm, const void *slot, h_u64 gfn) { mem_sync(gfn); }
void mark_page_dirty(void *kvm, h_u64 gfn) { mem_sync(gfn); }
unsigned long _copy_from_user(void *to, const void *from, unsigned long n)
{
	memcpy(to, from, n);
	return 0;
}
unsigned long _copy_to_user(void *to, const void *from, unsigned long n)
{
	memcpy(to, from, n);
	return 0;
}
/* KVM_SET_CPUID2's copy of the entries (a tree without kvm_set_cpuid(), 5.10: the
 * glue calls kvm_vcpu_ioctl_set_cpuid2() with its own array as the "user" one). */
void *vmemdup_user(const void *src, size_t len)
{
	void *p = h_zalloc(len);

	memcpy(p, src, len);
	return p;
}
long copy_to_user_nofault(void *to, const void *from, size_t n)
{
	memcpy(to, from, n);
	return 0;
}
long copy_from_user_nofault(void *to, const void *from, size_t n)
{
	memcpy(to, from, n);
	return 0;
}

/* Register-convention helpers of arch/x86/lib (getuser.S, putuser.S, retpoline.S). */
asm(".text\n"
    ".globl __get_user_nocheck_8, __get_user_8, __get_user_nocheck_4, __get_user_4\n"
    ".globl __get_user_nocheck_2, __get_user_2, __get_user_nocheck_1, __get_user_1\n"
    "__get_user_nocheck_8:\n__get_user_8:\n movq (%rax), %rdx\n xorl %eax, %eax\n ret\n"
    "__get_user_nocheck_4:\n__get_user_4:\n movl (%rax), %edx\n xorl %eax, %eax\n ret\n"
    "__get_user_nocheck_2:\n__get_user_2:\n movzwl (%rax), %edx\n xorl %eax, %eax\n ret\n"
    "__get_user_nocheck_1:\n__get_user_1:\n movzbl (%rax), %edx\n xorl %eax, %eax\n ret\n"
    ".globl __put_user_8, __put_user_nocheck_8, __put_user_4, __put_user_nocheck_4\n"
    "__put_user_8:\n__put_user_nocheck_8:\n movq %rax, (%rcx)\n xorl %ecx, %ecx\n ret\n"
    "__put_user_4:\n__put_user_nocheck_4:\n movl %eax, (%rcx)\n xorl %ecx, %ecx\n ret\n"
    ".globl __x86_return_thunk\n__x86_return_thunk:\n ret\n int3\n"
    /* Preemption points (PREEMPT_DYNAMIC static calls): nothing to reschedule. */
    ".globl __SCT__might_resched, __SCT__cond_resched, __SCT__preempt_schedule\n"
    ".globl __SCT__preempt_schedule_notrace\n"
    "__SCT__might_resched:\n__SCT__cond_resched:\n__SCT__preempt_schedule:\n"
    "__SCT__preempt_schedule_notrace:\n xorl %eax, %eax\n ret\n"
#define THUNK(r) ".globl __x86_indirect_thunk_" #r "\n__x86_indirect_thunk_" #r ":\n jmp *%" #r "\n"
    THUNK(rax) THUNK(rbx) THUNK(rcx) THUNK(rdx) THUNK(rsi) THUNK(rdi) THUNK(rbp)
    THUNK(r8) THUNK(r9) THUNK(r10) THUNK(r11) THUNK(r12) THUNK(r13) THUNK(r14) THUNK(r15)
    );

/* `current`: a zeroed task (per-CPU data sit at their link addresses, %gs base 0). */
static char fake_task[16384] __attribute__((aligned(64)));
void *current_task = fake_task;

/* ---- JSON output ---------------------------------------------------------- */
/* One result line per event, built in `out`, then appended to the output buffer. */
static char out[65536];
static int outn;

static void put_n(const char *s, int n)
{
	if (outn + n < (int)sizeof(out) - 1) {
		memcpy(out + outn, s, n);
		outn += n;
	}
}

static void put(const char *s) { put_n(s, strlen(s)); }
/* A string literal (a constant array, not a pointer): its length is known. */
#define put(s) (__builtin_constant_p(s) && \
		 __builtin_types_compatible_p(__typeof__(s), char[sizeof(s)]) ? \
		 put_n((s), sizeof(s) - 1) : put(s))

static void putf(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	put(buf);
}

/* Decimal without printf: results are mostly numbers, printed at every event. */
static void put_u64(h_u64 v)
{
	char buf[24];
	int i = sizeof(buf);
	do {
		buf[--i] = '0' + v % 10;
		v /= 10;
	} while (v);
	if (outn + (int)sizeof(buf) - i < (int)sizeof(out) - 1) {
		memcpy(out + outn, buf + i, sizeof(buf) - i);
		outn += sizeof(buf) - i;
	}
}

static void put_str(const char *s)
{
	put("\"");
	for (; *s; s++) {
		if (*s == '"' || *s == '\\') {
			char esc[2] = { '\\', *s };
			put_n(esc, 2);
		} else if ((unsigned char)*s < 32)
			putf("\\u%04x", *s);
		else
			put_n(s, 1);
	}
	put("\"");
}

static void put_fault(struct h_fault *f)
{
	put("{\"fault\":{\"to\":");
	put_str(f->to);
	put(",\"kind\":");
	put_str(f->kind);
	put(",\"vector\":");
	put_u64(f->vector);
	put(",\"error_code\":");
	put_u64(f->error_code & 0xffffffffull);
	put(",\"address\":");
	put_u64(f->address);
	put(f->nested ? ",\"nested\":true" : ",\"nested\":false");
	if (f->has_eq) {
		put(",\"exit_qualification\":");
		put_u64(f->exit_qualification);
	}
	if (f->has_info) {
		put(",\"exit_info_1\":");
		put_u64(f->exit_info_1);
		put(",\"exit_info_2\":");
		put_u64(f->exit_info_2);
	}
	put("}");
}

/* ---- the protocol: binary events in, JSON lines out ------------------------
 * An event is little-endian 64-bit words: a header (H_MAGIC | nargs << 8 | op)
 * and nargs arguments (emulator/native/model.py: pack()).  Answers are
 * buffered and written when the engine has no complete event left to read,
 * so one event gets its answer at once and a batch is answered in bulk.
 */
#define H_MAGIC 0x4b564d0000000000ull        /* "KVM" in the top bytes */
#define H_MAGIC_MASK 0xffffff0000000000ull
enum { OP_QUIT, OP_RESET, OP_TRANSLATE, OP_WRITE, OP_READ, OP_CR0, OP_CR3, OP_CR4, OP_EFER,
       OP_CPL, OP_AC, OP_PKRU, OP_INVLPG, OP_NESTED_ENTRY, OP_NESTED_EXIT, OP_RESET_CONTEXT };
#define MAX_ARGS 12

static void *vcpu;

static void apply(int op, const h_u64 *a)
{
	if (op == OP_RESET) {
		mem_reset();
		arena_reset();
		zone_reset();
		vcpu = h_vcpu_new((int)a[0], (int)a[1]);
		put("{\"ok\":true");
		return;
	}
	if (!vcpu)
		h_error("event before reset");
	int ok = 1;
	switch (op) {
	case OP_TRANSLATE: {
		struct h_fault f = { 0 };
		h_u64 gpa = 0;
		h_state.event = H_EV_TRANSLATE;
		if (h_translate(vcpu, (int)a[0], a[1], &gpa, &f))
			put_fault(&f);
		else {
			put("{\"gpa\":");
			put_u64(gpa);
		}
		return;
	}
	case OP_WRITE:
		mem_write(a[0], a[1], (int)a[2]);
		put("{\"ok\":true");
		return;
	case OP_READ:
		put("{\"val\":");
		put_u64(mem_read(a[0], (int)a[1]));
		return;
	case OP_CR0:
		ok = h_set_cr0(vcpu, a[0], (int)a[1]);
		break;
	case OP_CR3:
		ok = h_set_cr3(vcpu, a[0]);
		break;
	case OP_CR4:
		ok = h_set_cr4(vcpu, a[0]);
		break;
	case OP_EFER:
		ok = h_set_efer(vcpu, a[0]);
		break;
	case OP_CPL:
		h_state.cpl = (int)a[0];
		break;
	case OP_AC:
		h_state.ac = a[0] != 0;
		break;
	case OP_PKRU:
		h_set_pkru(vcpu, a[0]);
		break;
	case OP_INVLPG:
		h_state.event = H_EV_INVLPG;
		h_invlpg(vcpu, a[0]);
		break;
	case OP_RESET_CONTEXT:
		h_reset_context(vcpu);
		break;
	case OP_NESTED_ENTRY: {
		struct h_nested n = { .svm = (int)a[0], .tdp = (int)a[1], .root = a[2],
				      .ad = (int)a[3], .execonly = (int)a[4],
				      .pf_intercept = (int)a[5], .cr0 = a[6], .cr3 = a[7],
				      .cr4 = a[8], .efer = a[9], .cpl = (int)a[10],
				      .mbec = (int)a[11] };
		int r = h_nested_entry(vcpu, &n);
		if (r < 0)
			h_error("nested_entry while L2 runs");
		put(r ? "{\"ok\":true,\"pdptrs\":false" : "{\"ok\":true");
		return;
	}
	case OP_NESTED_EXIT:
		if (h_nested_exit(vcpu) < 0)
			h_error("nested_exit while L1 runs");
		break;
	default:
		h_error("unknown event");
	}
	put(ok < 0 ? "{\"error\":\"passthrough CR0 writes may only change CR0.WP, with TDP\""
		   : ok ? "{\"ok\":true" : "{\"ok\":false,\"gp\":true");
}

/* One event: its result line, whatever happens in the kernel's code. */
static void run_event(int op, const h_u64 *a)
{
	outn = 0;
	n_ad = n_notes = n_touched = 0;
	warned = 0;
	bugmsg[0] = trapname[0] = warn_text[0] = 0;
	is_error = 0;
	h_state.event = H_EV_OTHER;
	in_event = 1;
	/* No mask to save: handlers run with SA_NODEFER, so a siglongjmp out of one
	 * leaves nothing blocked (saving it would be a syscall per event). */
	if (sigsetjmp(event_env, 0) == 0) {
		apply(op, a);
		in_event = 0;
		if (warned) {
			outn = 0;
			put("{\"bug\":");
			put_str(bugmsg);
		}
	} else {
		in_event = 0;
		outn = 0;
		put(is_error ? "{\"error\":" : "{\"bug\":");
		put_str(bugmsg);
		if (trapname[0])
			put(",\"stub\":true");
	}
	if (n_ad) {
		put(",\"ad\":[");
		for (int i = 0; i < n_ad; i++) {
			put(i ? ",[" : "[");
			put_u64(ad_addr[i]);
			put(",");
			put_u64(ad_bits[i]);
			put("]");
		}
		put("]");
	}
	if (n_notes) {
		put(",\"notes\":[");
		for (int i = 0; i < n_notes; i++) {
			put(i ? ",[\"flush_tlb_gva\"," : "[\"flush_tlb_gva\",");
			put_u64(note_addr[i]);
			put(",");
			put_u64(note_roots[i]);
			put("]");
		}
		put("]");
	}
	put("}\n");
}

static char obuf[1 << 20];
static size_t olen;

static void out_flush(void)
{
	size_t done = 0;
	while (done < olen) {
		ssize_t n = write(1, obuf + done, olen - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			exit(0);            /* the driver has gone */
		done += n;
	}
	olen = 0;
}

static unsigned char ibuf[1 << 20];
static size_t ipos, iend;

int main(int argc, char **argv)
{
	struct sigaction sa = { 0 };
	static char altstack[65536];
	stack_t ss = { .ss_sp = altstack, .ss_size = sizeof(altstack) };

	sigaltstack(&ss, NULL);
	sa.sa_sigaction = on_signal;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
	sigaction(SIGILL, &sa, NULL);
	sigaction(SIGSEGV, &sa, NULL);
	sigaction(SIGBUS, &sa, NULL);
	sigaction(SIGFPE, &sa, NULL);
	sigaction(SIGTRAP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	mem_reset();
	arena_init();
	h_init();          /* WARNs of the set-up (hooks the harness leaves NULL) are not results */
	zone_base = zone_next;
	warned = 0;

	for (;;) {
		h_u64 head, args[MAX_ARGS];
		unsigned nargs;

		if (iend - ipos >= 8) {
			memcpy(&head, ibuf + ipos, 8);
			nargs = (head >> 8) & 0xff;
			if ((head & H_MAGIC_MASK) != H_MAGIC || nargs > MAX_ARGS) {
				fprintf(stderr, "native engine: bad event header %#llx\n", head);
				out_flush();
				return 2;
			}
			if (iend - ipos >= 8 * (nargs + 1)) {
				int op = head & 0xff;
				if (op == OP_QUIT)
					break;
				memset(args, 0, sizeof(args));
				memcpy(args, ibuf + ipos + 8, 8 * nargs);
				ipos += 8 * (nargs + 1);
				run_event(op, args);
				if (olen + outn > sizeof(obuf))
					out_flush();
				memcpy(obuf + olen, out, outn);
				olen += outn;
				continue;
			}
		}
		/* No complete event left: answer what was asked, then wait for more. */
		out_flush();
		memmove(ibuf, ibuf + ipos, iend - ipos);
		iend -= ipos;
		ipos = 0;
		ssize_t n = read(0, ibuf + iend, sizeof(ibuf) - iend);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		iend += n;
	}
	out_flush();
	return 0;
}

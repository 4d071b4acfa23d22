/*
 * The probe variant of the engine (emulator/native/probe.py): the kernel units
 * are compiled with -finstrument-functions, so every function of the tree's
 * code (and every inline function, through an out-of-line copy) calls
 * __cyg_profile_func_enter() on entry.  This file, linked only into the probe,
 * records the functions entered since the last SIGUSR1 (the driver sends it
 * between the events it has had answered and the event it asks about) and,
 * when the engine exits, writes their addresses, in order of first entry, one
 * hex number a line, to the file $H_PROBE_OUT.  The names come from the
 * executable's symbol table (static functions included), read by probe.py.
 *
 * The normal engine never contains this file: its speed is unaffected.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOTRACE __attribute__((no_instrument_function))
#define SLOTS (1 << 16)          /* a power of two; a walk enters a few hundred */

static void *slot_fn[SLOTS];
static unsigned slot_gen[SLOTS];
static void *order[SLOTS];       /* first entries of this generation, in order */
static unsigned n_order;
static volatile unsigned gen = 1;   /* a slot of an older generation is empty */

NOTRACE void __cyg_profile_func_enter(void *fn, void *site)
{
	unsigned long h = ((unsigned long)fn * 0x9E3779B97F4A7C15ull) >> 48;
	unsigned g = gen;

	(void)site;
	for (unsigned i = 0; i < SLOTS; i++, h = (h + 1) & (SLOTS - 1)) {
		if (slot_gen[h] != g) {
			slot_gen[h] = g;
			slot_fn[h] = fn;
			order[n_order++] = fn;
			return;
		}
		if (slot_fn[h] == fn)
			return;
	}
}

NOTRACE void __cyg_profile_func_exit(void *fn, void *site)
{
	(void)fn;
	(void)site;
}

/* Between events: the engine is waiting for input, no hook is running. */
NOTRACE static void on_usr1(int sig)
{
	(void)sig;
	n_order = 0;
	gen++;
}

/* A destructor, not atexit(): that one is in libc_nonshared.a, which the stub layer does
 * not look into (it would become a trapping stub). */
NOTRACE __attribute__((destructor)) static void dump(void)
{
	const char *path = getenv("H_PROBE_OUT");
	FILE *f = path ? fopen(path, "w") : NULL;

	if (!f)
		return;
	for (unsigned i = 0; i < n_order; i++)
		fprintf(f, "%lx\n", (unsigned long)order[i]);
	fclose(f);
}

NOTRACE __attribute__((constructor)) static void probe_init(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr1;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGUSR1, &sa, NULL);
}

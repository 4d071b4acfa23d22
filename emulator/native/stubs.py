"""The generated stub layer: every symbol the kernel units still need.

A function the harness does not provide traps with its name when called (the
event's result says which); a datum is zeroed, aligned storage.

Library helpers are the exception (LIB): lib/ and arch/x86/lib/ code such as
hweight or find_bit is not KVM code, is not in the units the engine compiles,
and a walk may reach it (7.x counts the bits of an NPF error code with
hweight64()).  They are provided here from compiler builtins, with the
kernel's semantics and calling conventions, instead of trapping.
"""
from __future__ import annotations

DATA_SIZE = 16384

# arch/x86/include/asm/arch_hweight.h calls __sw_hweight32/64 from inline asm
# ("call __sw_hweight64", input in %rdi, output in %rax, no clobbers): like
# arch/x86/lib/hweight.S they must preserve every register but %rax.  The
# bit count is the kernel's own SWAR sequence (no POPCNT requirement).
_HWEIGHT_ASM = r"""
__asm__(".text\n.globl __sw_hweight32\n.type __sw_hweight32,@function\n__sw_hweight32:\n"
	"movl %edi, %eax\npushq %rdx\nmovl %eax, %edx\nshrl %edx\nandl $0x55555555, %edx\n"
	"subl %edx, %eax\nmovl %eax, %edx\nshrl $2, %eax\nandl $0x33333333, %edx\n"
	"andl $0x33333333, %eax\naddl %edx, %eax\nmovl %eax, %edx\nshrl $4, %edx\n"
	"addl %edx, %eax\nandl $0x0f0f0f0f, %eax\nimull $0x01010101, %eax, %eax\n"
	"shrl $24, %eax\npopq %rdx\nret\n.size __sw_hweight32, .-__sw_hweight32\n");
__asm__(".text\n.globl __sw_hweight64\n.type __sw_hweight64,@function\n__sw_hweight64:\n"
	"pushq %rdi\npushq %rdx\nmovq %rdi, %rdx\nmovabsq $0x5555555555555555, %rax\n"
	"shrq %rdx\nandq %rdx, %rax\nmovabsq $0x3333333333333333, %rdx\nsubq %rax, %rdi\n"
	"movq %rdi, %rax\nshrq $2, %rdi\nandq %rdx, %rax\nandq %rdi, %rdx\naddq %rdx, %rax\n"
	"movq %rax, %rdx\nshrq $4, %rdx\naddq %rdx, %rax\nmovabsq $0x0f0f0f0f0f0f0f0f, %rdx\n"
	"andq %rdx, %rax\nmovabsq $0x0101010101010101, %rdx\nimulq %rdx, %rax\n"
	"shrq $56, %rax\npopq %rdx\npopq %rdi\nret\n.size __sw_hweight64, .-__sw_hweight64\n");
"""

_BITS = "#define H_BPL 64\n"
_FIND = r"""
static unsigned long h_find(const unsigned long *a, unsigned long n, unsigned long s, int zero)
{
	for (; s < n; s++)
		if (((a[s / H_BPL] >> (s % H_BPL)) & 1) != (unsigned long)zero)
			return s;
	return n;
}
"""

# name -> (helpers it needs, C definition).  Semantics of lib/find_bit.c, lib/bitmap.c
# and lib/hweight.c: "not found" is the size; bitmaps are arrays of unsigned long.
LIB: dict[str, tuple[tuple[str, ...], str]] = {
    "__sw_hweight32": (("hweight_asm",), ""),
    "__sw_hweight64": (("hweight_asm",), ""),
    "__sw_hweight16": ((), "unsigned int __sw_hweight16(unsigned int w)"
                           " { return __builtin_popcount(w & 0xffff); }"),
    "__sw_hweight8": ((), "unsigned int __sw_hweight8(unsigned int w)"
                          " { return __builtin_popcount(w & 0xff); }"),
    "_find_first_bit": (("find",), "unsigned long _find_first_bit(const unsigned long *a,"
                                   " unsigned long n) { return h_find(a, n, 0, 0); }"),
    "_find_first_zero_bit": (("find",), "unsigned long _find_first_zero_bit(const unsigned long"
                                        " *a, unsigned long n) { return h_find(a, n, 0, 1); }"),
    "_find_next_bit": (("find",), "unsigned long _find_next_bit(const unsigned long *a,"
                                  " unsigned long n, unsigned long s) { return h_find(a, n, s, 0); }"),
    "_find_next_zero_bit": (("find",), "unsigned long _find_next_zero_bit(const unsigned long *a,"
                                       " unsigned long n, unsigned long s)"
                                       " { return h_find(a, n, s, 1); }"),
    "_find_last_bit": (("find",), "unsigned long _find_last_bit(const unsigned long *a,"
                                  " unsigned long n) { unsigned long i = n; while (i--)"
                                  " if ((a[i / H_BPL] >> (i % H_BPL)) & 1) return i; return n; }"),
    "__bitmap_or": ((), "void __bitmap_or(unsigned long *d, const unsigned long *a,"
                        " const unsigned long *b, unsigned int n)"
                        " { for (unsigned int k = 0; k < (n + 63) / 64; k++) d[k] = a[k] | b[k]; }"),
    "__bitmap_and": ((), "_Bool __bitmap_and(unsigned long *d, const unsigned long *a,"
                         " const unsigned long *b, unsigned int n) { unsigned long r = 0;"
                         " unsigned int k, w = n / 64; for (k = 0; k < w; k++) r |= (d[k] = a[k] & b[k]);"
                         " if (n % 64) r |= (d[k] = a[k] & b[k] & ((1UL << (n % 64)) - 1));"
                         " return r != 0; }"),
    "__bitmap_weight": ((), "unsigned int __bitmap_weight(const unsigned long *a, unsigned int n)"
                            " { unsigned int k, w = 0; for (k = 0; k < n / 64; k++)"
                            " w += __builtin_popcountl(a[k]); if (n % 64)"
                            " w += __builtin_popcountl(a[k] & ((1UL << (n % 64)) - 1)); return w; }"),
}
_HELPERS = {"hweight_asm": _HWEIGHT_ASM, "find": _BITS + _FIND}


def stub_source(undefined: list[str], functions: set[str]) -> str:
    out = ["/* Generated by emulator/native/stubs.py; do not edit. */",
           "extern void h_stub_hit(const char *name) __attribute__((noreturn));"]
    helpers: list[str] = []
    for name in undefined:
        if name in LIB:
            needs, body = LIB[name]
            helpers += [h for h in needs if h not in helpers]
            if body:
                out.append(body)
        elif name in functions:
            out.append(f'void {name}(void) {{ h_stub_hit("{name}"); }}')
        else:
            out.append(f"char {name}[{DATA_SIZE}] __attribute__((aligned(64)));")
    return "\n".join(out[:2] + [_HELPERS[h] for h in helpers] + out[2:]) + "\n"

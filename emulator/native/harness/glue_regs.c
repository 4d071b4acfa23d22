/* Appended to the tree's own preprocessed arch/x86/kvm/regs.c (7.x: load_pdptrs()
 * and the CR helpers moved there); nothing of ours is needed in it. */
#include "harness.h"

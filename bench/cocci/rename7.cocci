// A plain 7-rule renaming of the move, for timing against kvm-refactor.
// It is the naive approach: it ignores types, so its output does not build.
@@
@@
- vcpu->arch.walk_mmu
+ &vcpu->arch.gva_walk

@@
@@
- vcpu->arch.nested_mmu
+ vcpu->arch.gva_walk

@@
expression E;
@@
- E->shadow_zero_check
+ E->fmt

@@
expression E;
@@
- E->guest_rsvd_check
+ E->w->fmt

@@
@@
- struct rsvd_bits_validate
+ struct kvm_page_format

@@
expression E;
@@
- E->permissions
+ E->w->fmt.permissions

@@
expression E;
@@
- E->pkru_mask
+ E->w->fmt.pkru_mask

"""Executable model of x86 guest paging and of KVM's MMU plumbing in both layouts.

The old-layout plumbing (kvm_old.py) is written once; the new-layout plumbing
is derived from it with the rules in rules/ (derive.py), so a wrong rule shows
up as a behaviour divergence between the two models.
"""

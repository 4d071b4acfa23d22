"""Unified diff / mbox parsing (refactor/patch.py) and patch lint without a tree."""
from __future__ import annotations

import pytest

from refactor.lint.engine import lint_patches
from refactor.frontend.patch import PatchError, parse_patches

MBOX = """From 1111111111111111111111111111111111111111 Mon Sep 17 00:00:00 2001
From: A U Thor <a@example.org>
Date: Mon, 1 Jan 2026 00:00:00 +0000
Subject: [PATCH v2 1/2] KVM: x86: first
 continued subject

Body mentions --- a/not/a/diff in prose.
---
 arch/x86/kvm/x.c | 2 +-

diff --git a/arch/x86/kvm/x.c b/arch/x86/kvm/x.c
index 1234567..89abcde 100644
--- a/arch/x86/kvm/x.c
+++ b/arch/x86/kvm/x.c
@@ -10,3 +10,4 @@ static int f(struct kvm_vcpu *vcpu)
 	int a;
-	int b;
+	int b = 1;
+	int c;
 	return a;
@@ -40,2 +41,3 @@ static int g(void)
 	x();
+	y();
 	z();
-- 
2.43.0


From 2222222222222222222222222222222222222222 Mon Sep 17 00:00:00 2001
From: A U Thor <a@example.org>
Subject: [PATCH v2 2/2] KVM: x86: second

---
diff --git a/arch/x86/kvm/new.c b/arch/x86/kvm/new.c
new file mode 100644
index 0000000..1111111
--- /dev/null
+++ b/arch/x86/kvm/new.c
@@ -0,0 +1,2 @@
+int n;
+int m;
\\ No newline at end of file
diff --git a/arch/x86/kvm/old.c b/arch/x86/kvm/old.c
deleted file mode 100644
--- a/arch/x86/kvm/old.c
+++ /dev/null
@@ -1,1 +0,0 @@
-int gone;
diff --git a/arch/x86/kvm/a.c b/arch/x86/kvm/b.c
similarity index 100%
rename from arch/x86/kvm/a.c
rename to arch/x86/kvm/b.c
diff --git a/blob.bin b/blob.bin
Binary files a/blob.bin and b/blob.bin differ
-- 
2.43.0
"""


def test_mbox_two_patches():
    p1, p2 = parse_patches(MBOX)
    assert p1.number == (1, 2) and p1.subject == "KVM: x86: first continued subject"
    assert p2.number == (2, 2) and p2.label == "2/2 KVM: x86: second"
    (x,) = p1.files
    assert x.path == "arch/x86/kvm/x.c"
    assert x.added() == {11: "\tint b = 1;", 12: "\tint c;", 42: "\ty();"}
    assert [h.section for h in x.hunks] == ["static int f(struct kvm_vcpu *vcpu)", "static int g(void)"]
    new, old, renamed, blob = p2.files
    assert new.old_path is None and new.new_path == "arch/x86/kvm/new.c" and new.added() == {1: "int n;", 2: "int m;"}
    assert old.new_path is None and old.added() == {}
    assert renamed.old_path == "arch/x86/kvm/a.c" and renamed.new_path == "arch/x86/kvm/b.c" and not renamed.hunks
    assert blob.binary


def test_sparse_post_image_keeps_line_numbers():
    (p, _) = parse_patches(MBOX)
    lines = p.files[0].post_image_sparse().decode().split("\n")
    assert lines[10] == "\tint b = 1;" and lines[41] == "\ty();" and lines[20] == ""


def test_apply_to_with_offset():
    (p, _) = parse_patches(MBOX)
    original = ["l%d" % i for i in range(1, 60)]
    original[9:13] = ["\tint a;", "\tint b;", "\treturn a;", "l13"]
    original[9 + 3 - 1:9 + 3 - 1] = []  # no change; hunk 1 matches at line 10
    # hunk 2 context sits two lines lower than the header says
    original[41:44] = ["\tx();", "\tz();", "l44"]
    text = "\n".join(original)
    out = p.files[0].apply_to(text)
    assert out is not None and "\ty();" in out and "\tint c;" in out
    assert p.files[0].apply_to("nothing like it") is None


def test_plain_git_diff_and_crlf():
    diff = "diff --git a/f.c b/f.c\r\n--- a/f.c\r\n+++ b/f.c\r\n@@ -1 +1 @@\r\n-a\r\n+b\r\n"
    (p,) = parse_patches(diff)
    assert p.subject is None and p.files[0].added() == {1: "b"}


@pytest.mark.parametrize("text, why", [
    ("", "not a patch"),
    ("hello\nworld\n", "not a patch"),
    ("@@ -1 +1 @@\n-a\n+b\n", "hunk without a file header"),
    ("--- a/f.c\n+++ b/f.c\n@@ -1,3 +1,3 @@\n a\n-b\n", "truncated"),
])
def test_not_patches(text, why):
    with pytest.raises(PatchError, match=why):
        parse_patches(text, "in.txt")


def test_layout_of_a_patch_comes_from_its_pre_image():
    # Context with walk_mmu: the patch is meant for an old-layout tree, where
    # walk_mmu is what the move will change (and the old message says so).
    old = ("--- a/arch/x86/kvm/x86.c\n+++ b/arch/x86/kvm/x86.c\n@@ -1,2 +1,3 @@\n"
           " \tstruct kvm_mmu *mmu = vcpu->arch.walk_mmu;\n+\tstruct kvm_mmu *m2 = vcpu->arch.walk_mmu;\n \tx();\n")
    (f,) = lint_patches(old, "old.patch")
    assert f.line == 2 and "the kvm_pagewalk move removes" in f.message
    new = old.replace(" \tstruct kvm_mmu *mmu = vcpu->arch.walk_mmu;", " \tstruct kvm_pagewalk *w = &vcpu->arch.gva_walk;")
    (f,) = lint_patches(new, "new.patch")
    assert "is not a member" in f.message


def test_walker_names_from_the_patch_or_option():
    patch = ("--- a/arch/x86/kvm/x86.c\n+++ b/arch/x86/kvm/x86.c\n@@ -1,2 +1,3 @@\n"
             " \tw = &vcpu->arch.cpu_walk; v = &vcpu->arch.tdp_walk;\n+\tm = vcpu->arch.walk_mmu;\n \tx();\n")
    (f,) = lint_patches(patch, "p")
    assert f.fix == "&vcpu->arch.cpu_walk"  # preset v1 recognised in the text
    (f,) = lint_patches(patch, "p", names="gva=g,ngpa=n")
    assert f.fix == "&vcpu->arch.g"


def _hunk(path: str, pre: list[str], post: list[str], context_before: str, context_after: str) -> str:
    body = [f" {context_before}"] + [f"-{x}" for x in pre] + [f"+{x}" for x in post] + [f" {context_after}"]
    return (f"--- a/{path}\n+++ b/{path}\n@@ -1,{len(pre) + 2} +1,{len(post) + 2} @@ static void f(struct kvm_vcpu *vcpu)\n"
            + "\n".join(body) + "\n")


def test_a_finding_the_replaced_line_already_had_is_not_the_patchs():
    # A line changed for another reason keeps its old-layout name: carried, not introduced.
    carried = _hunk("arch/x86/kvm/mmu/mmu.c", ["\tstruct kvm_mmu *mmu = vcpu->arch.walk_mmu;"],
                    ["\tstruct kvm_pagewalk *w = vcpu->arch.walk_mmu->w;"], "{", "\tx();")
    assert lint_patches(carried, "carried.patch") == []
    # One more use than the patch removes is the patch's own.
    more = _hunk("arch/x86/kvm/mmu/mmu.c", ["\tstruct kvm_mmu *mmu = vcpu->arch.walk_mmu;"],
                 ["\tstruct kvm_mmu *mmu = vcpu->arch.walk_mmu;", "\tstruct kvm_mmu *m2 = vcpu->arch.walk_mmu;"],
                 "{", "\tx();")
    (f,) = lint_patches(more, "more.patch")
    assert f.rule == "KVM001" and f.line == 3
    # A renamed local of the old struct's type: the struct was on the removed line too.
    renamed = _hunk("arch/x86/kvm/mmu/mmu.c", ["\tstruct rsvd_bits_validate *rsvd_check;"],
                    ["\tstruct rsvd_bits_validate *fmt;"], "{", "\tint level;")
    assert lint_patches(renamed, "renamed.patch") == []
    added = _hunk("arch/x86/kvm/mmu/mmu.c", [], ["\tstruct rsvd_bits_validate *fmt;"], "{", "\tint level;")
    assert [f.rule for f in lint_patches(added, "added.patch")] == ["KVM004"]


def test_a_removed_member_reached_for_its_walker_is_a_move_in_progress():
    # `nested_mmu.w = ...` only exists while both layouts do (a series' first patch); for a
    # new-layout tree it is an error like any other use of nested_mmu.
    attach = ("--- a/arch/x86/kvm/mmu/mmu.c\n+++ b/arch/x86/kvm/mmu/mmu.c\n@@ -1,2 +1,3 @@\n"
              " \tvcpu->arch.walk_mmu = &vcpu->arch.root_mmu;\n"
              "+\tvcpu->arch.nested_mmu.w = &vcpu->arch.gva_walk;\n \treturn ret;\n")
    assert lint_patches(attach, "attach.patch") == []
    plain = attach.replace("nested_mmu.w = &vcpu->arch.gva_walk", "nested_mmu.get_pdptr = NULL")
    assert "KVM001" in [f.rule for f in lint_patches(plain, "plain.patch")]
    new = attach.replace(" \tvcpu->arch.walk_mmu = &vcpu->arch.root_mmu;",
                         " \tstruct kvm_pagewalk *w = &vcpu->arch.gva_walk;")
    assert [f.rule for f in lint_patches(new, "new.patch")] == ["KVM001"]


def test_a_translation_moved_to_the_walker_keeps_the_walker_it_had():
    # Issue 13 item 6: a hunk that moves `mmu->gva_to_gpa(vcpu, mmu, ...)` onto the walker but
    # does not show where `mmu` comes from.  Without --tree `mmu` is taken for vcpu->arch.mmu
    # (which varies), but it was the same `mmu` on the removed line: the walker is carried over.
    old = "\treturn mmu->gva_to_gpa(vcpu, mmu, gva, access, exception);"
    path, before, after = "arch/x86/kvm/x86.c", "\taccess |= PFERR_WRITE_MASK;", "}"
    moved = _hunk(path, [old], [old.replace("mmu->gva_to_gpa", "mmu->w->gva_to_gpa")], before, after)
    assert lint_patches(moved, "moved.patch") == []
    # The same line added without a removed one is judged as before.
    added = _hunk(path, [], [old.replace("mmu->gva_to_gpa", "mmu->w->gva_to_gpa")], before, after)
    assert [(f.rule, f.expression) for f in lint_patches(added, "added.patch")] == [("KVM010", "mmu->w")]
    # A walker the removed line did not use is the patch's own.
    varying = _hunk(path, [old], [old.replace("mmu->gva_to_gpa", "vcpu->arch.mmu->w->gva_to_gpa")], before, after)
    assert [(f.rule, f.expression) for f in lint_patches(varying, "p")] == [("KVM010", "vcpu->arch.mmu->w")]
    to_ngpa = old.replace("mmu->gva_to_gpa(vcpu, mmu,", "mmu->w->gva_to_gpa(vcpu, &vcpu->arch.ngpa_walk,")
    ngpa = _hunk(path, [old], [to_ngpa], before, after)
    assert [(f.rule, f.expression) for f in lint_patches(ngpa, "p")] == [("KVM010", "&vcpu->arch.ngpa_walk")]
    # Where the hunk shows `mmu`, it is typed: the GVA tables, nothing to report either way.
    walk_mmu = "\tstruct kvm_mmu *mmu = vcpu->arch.walk_mmu;"
    fixed = _hunk(path, [old], [old.replace("mmu->gva_to_gpa", "mmu->w->gva_to_gpa")], walk_mmu, after)
    assert lint_patches(fixed, "fixed.patch") == []


def test_a_removed_member_standing_for_a_walker_names_it():
    # With --tree, a function whose body names one walker only works with it (KVM013's stage).
    # In a tree the move is half done in, `vcpu->arch.walk_mmu->w` is the GVA walker: the
    # function below works with both, and giving it `&vcpu->arch.gva_walk` is no finding.
    from refactor.index.indexer import index_sources
    from refactor.lint.engine import function_walkers
    from refactor.lint.registry import load_lint_rules

    rules = load_lint_rules().rules
    src = (b"void f(struct kvm_vcpu *vcpu, struct x86_exception *fault)\n{\n\tstruct kvm_pagewalk *w;\n\n"
           b"\tw = fault->nested_page_fault ? &vcpu->arch.ngpa_walk :\n\t\t\t\t\tvcpu->arch.walk_mmu->w;\n}\n")
    refs = index_sources({"arch/x86/kvm/x86.c": src}, rules).references
    names = rules.names("upstream")
    assert function_walkers(refs, names, rules)["f"] == {"gva", "ngpa"}
    assert function_walkers(refs, names)["f"] == {"ngpa"}  # by the new names alone
    # A function naming removed members only compares them (6.1's mmu_is_nested()): it does
    # not walk, and calling it in an nGPA-stage function (kvm_translate_gpa()) is no finding.
    src = b"static inline bool g(struct kvm_vcpu *vcpu)\n{\n\treturn vcpu->arch.walk_mmu == &vcpu->arch.nested_mmu;\n}\n"
    refs = index_sources({"arch/x86/kvm/mmu.h": src}, rules).references
    assert "g" not in function_walkers(refs, names, rules)

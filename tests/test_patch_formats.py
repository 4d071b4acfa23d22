"""Patches as the tools kernel maintainers use write them: git's prefixes, `--no-prefix`,
quilt's `linux.orig/` and `linux/` (Debian's debian/patches, distro kernels) and
`diff -ru`.  Each names the same tree file, so each ports the same way."""
from __future__ import annotations

import pytest

from refactor.frontend.patch import parse_patches
from refactor.port.diff import file_diff
from refactor.port.engine import port_one
from refactor.port.mail import read_mails

REL = "arch/x86/kvm/mmu/mmu.c"


def _diff(tree, old_prefix: str, new_prefix: str) -> str:
    text = (tree / REL).read_text()
    at = text.index("\nvoid kvm_mmu_reset_context(")
    new = text[:at] + "\n/* probe */" + text[at:]
    body = file_diff(REL, text, new)
    body = body[body.index("\n@@") + 1:]          # the hunks, under the headers written here
    old_name = f"{old_prefix}{REL}" if old_prefix is not None else "/dev/null"
    return f"--- {old_name}\n+++ {new_prefix}{REL}\n{body}"


@pytest.mark.parametrize("old_prefix,new_prefix", [("a/", "b/"), ("", ""), ("i/", "w/"),
                                                    ("linux.orig/", "linux/"),
                                                    ("linux-7.2.orig/", "linux-7.2/")],
                         ids=["git", "no-prefix", "mnemonic", "quilt", "diff-ru"])
def test_every_prefix_style_names_the_tree_file(trees, targets, rules, old_prefix, new_prefix):
    diff = _diff(trees["7.2"], old_prefix, new_prefix)
    (p,) = parse_patches(diff)
    assert [(f.old_path, f.new_path) for f in p.files] == [(REL, REL)]
    res = port_one(read_mails(diff, "x.patch")[0], targets["7.2"], rules)
    assert res.result == "ported" and [h.status for h in res.hunks] == ["clean"], \
        [(h.status, h.reason) for h in res.hunks]


def test_a_top_directory_both_sides_share_is_a_path_not_a_prefix():
    """`--no-prefix` output of a file under the same directory on both sides keeps it; only
    differing first components (two trees compared) are dropped, as patch -p1 would."""
    (p,) = parse_patches("--- virt/kvm/kvm_main.c\n+++ virt/kvm/kvm_main.c\n@@ -1 +1 @@\n-a\n+b\n")
    assert p.files[0].path == "virt/kvm/kvm_main.c"
    (q,) = parse_patches("--- /dev/null\n+++ b/arch/x86/kvm/new.c\n@@ -0,0 +1 @@\n+a\n")
    assert (q.files[0].old_path, q.files[0].new_path) == (None, "arch/x86/kvm/new.c")


def _mime(mail: str, encoding: str) -> str:
    """The mail as a mail client sends it: body in `encoding`, author and subject in RFC 2047."""
    import email.policy
    from email.message import EmailMessage

    head, _, body = mail.partition("\n\n")
    headers = dict(line.split(": ", 1) for line in head.split("\n")[1:])
    msg = EmailMessage(policy=email.policy.SMTP.clone(linesep="\n", max_line_length=76))
    msg["From"] = headers["From"].replace("Jane", "J\u00f6rg")
    msg["Date"] = headers["Date"]
    msg["Subject"] = headers["Subject"] + " (f\u00fcr 7.2)"
    msg.set_content(body, cte=encoding)
    return head.split("\n")[0] + "\n" + msg.as_string()


@pytest.mark.parametrize("encoding", ["quoted-printable", "base64"])
def test_an_encoded_mail_ports_as_its_decoded_text(trees, targets, rules, encoding):
    """A quoted-printable mail writes `==` as `=3D=3D` and breaks long lines with `=`; read as
    text, such a hunk conflicts or, worse, adds `=3D` to the code.  It is decoded as git am
    decodes it, and ports exactly as the plain mail does."""
    from test_port import PKRU_NEW, PKRU_OLD, make_mail

    plain = make_mail(trees["7.3"], "arch/x86/kvm/mmu.h", PKRU_OLD,
                      PKRU_NEW.replace("return 0;", "return (w->fmt.pkru_mask == 0) ? 0 : " + "1" * 70 + ";"))
    encoded = _mime(plain, encoding)
    assert ("=3D=3D" in encoded) == (encoding == "quoted-printable") and "== 0" not in encoded
    want = port_one(read_mails(plain, "p.patch")[0], targets["7.2"], rules)
    mail = read_mails(encoded, "e.patch")[0]
    got = port_one(mail, targets["7.2"], rules)
    assert want.result == "ported" and got.diff == want.diff
    assert mail.author == "J\u00f6rg Dev <jane@example.org>" and mail.subject.endswith("(f\u00fcr 7.2)")

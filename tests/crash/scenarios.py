"""The sites the crash suite kills doit in, from real parts: hg served by a real ``hg serve``
on 127.0.0.1, git repositories, a tarball, the kbuild-like kernel tree and the Xen-like tree
of the build tests (real make and gcc), a staging install root with the user's grub.conf or
grub.cfg and guest config, recorded sysfs trees for the devices.

Stand-ins, and why: the kernel and Xen trees are the small look-alikes of tests/support (a
real build takes an hour here); the machine's PCI devices are a recorded sysfs tree.
"""

from __future__ import annotations

import difflib
import shutil
import subprocess
from pathlib import Path

from ..support import install as h
from ..support.build_trees import FRAGMENT, RELEASE, XEN_FILES, git_tree, kernel_tree
from ..support.doit import write_config
from ..support.upstreams import HgServer, hg, make_tarball
from .harness import Site, run

# what `doit install` asks of the two trees, as kbuild and Xen's xen/Makefile have it
MODULES_INSTALL = f"""
MODLIB = $(INSTALL_MOD_PATH)/lib/modules/{RELEASE}
modules_install:
\t@test -n "$(INSTALL_MOD_PATH)" || {{ echo "no INSTALL_MOD_PATH"; exit 1; }}
\tcd $(objtree) && for m in $$(cat modules.order); do \\
\t\tmkdir -p $(MODLIB)/kernel/$$(dirname $$m) && cp $$m $(MODLIB)/kernel/$$m; done
\tcp $(objtree)/modules.order $(MODLIB)/modules.order
"""
XEN_VERSION = "XEN_VERSION = 4\nXEN_SUBVERSION = 19\nXEN_EXTRAVERSION = .1\n" \
    "XEN_FULLVERSION = $(XEN_VERSION).$(XEN_SUBVERSION)$(XEN_EXTRAVERSION)\n"


def unified(path: str, old: str, new: str) -> str:
    """A patch of one file as `diff -u` writes it (a/ and b/ prefixes)."""
    return "".join(difflib.unified_diff(old.splitlines(keepends=True),
                                        new.splitlines(keepends=True),
                                        f"a/{path}", f"b/{path}"))


def many_files(n: int, seed: str) -> dict[str, str]:
    """*n* small source files in a few directories: a clone or an unpack that takes a while."""
    return {f"dir{i % 7}/sub{i % 3}/file{i}.c": f"/* {seed} {i} */\n" + "int x;\n" * (i % 40)
            for i in range(n)}


def kbuild_site(tmp: Path, loader: str = "grub-legacy") -> Site:
    """The kbuild-like kernel and Xen-like trees as tagged git upstreams, two Xen patches,
    a fragment, and an install into a staging root (the user's bootloader file, a guest)."""
    up = tmp / "up"
    linux = kernel_tree(up)
    with open(linux / "Makefile", "a") as f:
        f.write(MODULES_INSTALL)
    git_tree(linux, {})
    xen_files = {**XEN_FILES, "xen/Makefile": XEN_VERSION + XEN_FILES["xen/Makefile"]}
    git_tree(up / "xen.git", xen_files)
    fragment = up / "dom0.config"
    fragment.write_text(FRAGMENT + "CONFIG_ACPI=y\nCONFIG_XEN_DOM0=y\n")  # a dom0 ([passthrough])
    pdir = up / "patches" / "xen"
    pdir.mkdir(parents=True)
    kernel_c = XEN_FILES["xen/common/kernel.c"]
    sched_c = XEN_FILES["xen/common/sched.c"]
    (pdir / "0001-version.patch").write_text(unified(
        "xen/common/kernel.c", kernel_c, kernel_c + "int xen_minor(void) { return 19; }\n"))
    (pdir / "0002-sched.patch").write_text(unified(
        "xen/common/sched.c", sched_c, "/* credit2 */\n" + sched_c))
    (pdir / "series").write_text("0001-version.patch\n0002-sched.patch\n")
    root = tmp / "root"
    machine = h.machine_2009(tmp / "machine")
    if loader == "grub-legacy":
        (root / "boot" / "grub").mkdir(parents=True)
        (root / "boot" / "grub" / "grub.conf").write_text(h.USER_GRUB_CONF)
        (root / "etc" / "xen").mkdir(parents=True)
        (root / "etc" / "xen" / "GUEST.hvm").write_text(h.USER_XM_GUEST)
        guest = ('[[guests]]\nname = "GUEST"\nconfig = "/etc/xen/GUEST.hvm"\n'
                 'toolstack = "xm"\ndevices = ["00:19.0"]\n')
        watched = ("boot/grub/grub.conf", "etc/xen/GUEST.hvm")
    else:
        (root / "boot" / "grub").mkdir(parents=True)
        (root / "boot" / "grub" / "grub.cfg").write_text(h.USER_GRUB_CFG)
        guest = ('[[guests]]\nname = "guest"\nconfig = "/etc/xen/guest.cfg"\n'
                 'toolstack = "xl"\ndevices = ["00:19.0"]\n')
        watched = ("boot/grub/grub.cfg", "etc/xen/guest.cfg")
    cfg = write_config(tmp, f"""
[sources.linux]
vcs = "git"
url = "{linux}"
rev = "v1.0"

[sources.xen]
vcs = "git"
url = "{up / 'xen.git'}"
rev = "v1.0"
patches = "{pdir}"

[xen]
source = "xen"

[kernel]
source = "linux"
base = "tinyconfig"
fragments = ["{fragment}"]

[build]
jobs = 2

[install]
root = "{root}"
bootloader = "{loader}"
initramfs = "none"
xen_cmdline = "iommu=1"
dom0_cmdline = "ro root=LABEL=/"

[passthrough]
devices = ["0000:00:19.0"]

{guest}""")
    return Site(cfg, tmp / "ws", root, env=machine, watched=watched)


def prepared(site: Site, *tasks: str) -> Site:
    """*site* with *tasks* run to completion first (the state the killed stage starts from)."""
    for task in tasks:
        run(site, [task])
    return site


def fetch_site(tmp: Path, server: HgServer) -> Site:
    """Three sources of some size: hg served by ``hg serve``, git, and a tarball."""
    up = tmp / "up"
    hg_repo = up / "xen.hg"
    hg("init", str(hg_repo))
    for name, text in many_files(300, "hg").items():
        (hg_repo / name).parent.mkdir(parents=True, exist_ok=True)
        (hg_repo / name).write_text(text)
    hg("commit", "--addremove", "-q", "-m", "tree", cwd=hg_repo)
    (hg_repo / "README").write_text("xen\n")
    hg("commit", "--addremove", "-q", "-m", "readme", cwd=hg_repo)
    link = server.root / f"crash-{tmp.name}"
    link.symlink_to(hg_repo)
    git_tree(up / "linux.git", many_files(300, "git"))
    tarball = make_tarball(up / "tools-1.0.tar.gz", many_files(600, "tar"), top="tools-1.0")
    cfg = write_config(tmp, f"""
[sources.xen]
vcs = "hg"
url = "{server.url}{link.name}/"

[sources.linux]
vcs = "git"
url = "{up / 'linux.git'}"
rev = "main"

[sources.tools]
vcs = "tarball"
url = "{tarball}"
""")
    return Site(cfg, tmp / "ws", tmp / "root", spare={server.process.pid})


def updated_site(tmp: Path, server: HgServer) -> Site:
    """fetch_site fetched once, then both VCS upstreams moved on: every file changed, so the
    next fetch pulls and checks out a new revision over the old tree."""
    site = prepared(fetch_site(tmp, server), "fetch")
    up = tmp / "up"
    for name, text in many_files(300, "hg, later").items():
        (up / "xen.hg" / name).write_text(text)
    hg("commit", "-q", "-m", "every file", cwd=up / "xen.hg")
    repo = up / "linux.git"
    for name, text in many_files(300, "git, later").items():
        (repo / name).write_text(text)
    subprocess.run(["git", "-C", str(repo), "commit", "-q", "-a", "-m", "every file"],
                   check=True, capture_output=True)
    return site


def unlink_served(site: Site, server: HgServer) -> None:
    for link in server.root.glob(f"crash-{site.config.parent.name}"):
        link.unlink()


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()

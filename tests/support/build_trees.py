"""The trees of the build tests and the crash suite: the kbuild-like kernel tree
(fake_kernel's config half plus build targets: objects in O=, bzImage, System.map, modules)
and a Xen-like tree (build-xen: xen/xen.gz, xen/xen-syms), as tagged git upstreams."""

from __future__ import annotations

from pathlib import Path

import git

from . import fake_kernel

RELEASE = fake_kernel.RELEASE

# The build half of the tiny kernel tree; the config half (Makefile targets, Kconfig, a real
# conf/mconf look-alike) is tests/fake_kernel.py's, which the kconfig tests use too.
BUILD_RULES = r"""
# --- build targets (tests/test_build.py): objects in O=, bzImage, System.map, modules
objtree := $(abspath $(O))
CONFIG := $(objtree)/$(KCONFIG_CONFIG)
-include $(CONFIG)
obj-y := init/main.o kernel/fork.o arch/x86/xen/enlighten_pv.o
obj-$(CONFIG_XEN_PCIDEV_BACKEND) += drivers/xen/xen-pciback/pci_stub.o
obj-$(CONFIG_XEN_BLKDEV_BACKEND) += drivers/block/xen-blkback/blkback.o
OBJS := $(addprefix $(objtree)/,$(obj-y))
MODS := $(addprefix $(objtree)/,$(obj-m:.o=.ko))
.PHONY: bzImage modules FORCE
FORCE:
.SECONDARY:
ifeq ($(filter %config kernelrelease,$(MAKECMDGOALS)),)
ifeq ($(wildcard $(CONFIG)),)
$(error .config not found in $(objtree): run make tinyconfig first)
endif
endif

$(objtree)/include/config/kernel.release: $(CONFIG)
	@mkdir -p $(dir $@)
	@echo {release} > $@
$(objtree)/%.o: $(srctree)/%.c $(CONFIG)
	@mkdir -p $(dir $@)
	@if [ -n "$$TINY_HOLD" ]; then cut -d' ' -f5 /proc/$$$$/stat > "$$TINY_HOLD.started"; \
		while [ -e "$$TINY_HOLD" ]; do sleep 0.05; done; fi
	@echo "  CC      $*.o"
	@$(CC) -c -O1 -o $@ $<
$(objtree)/vmlinux: $(OBJS) $(objtree)/include/config/kernel.release
	@echo "  LD      vmlinux"
	@$(CC) -r -nostdlib -o $@ $(OBJS)
	@echo "  NOTE    $(TINY_NOTE)"
	@nm -n $@ > $(objtree)/System.map
# FORCE: as kbuild's, the image is written again by every make (same bytes, new mtime)
$(objtree)/arch/x86/boot/bzImage: $(objtree)/vmlinux FORCE
	@mkdir -p $(dir $@)
	@echo "  BUILD   arch/x86/boot/bzImage"
	@gzip -n -c $< > $@
bzImage: $(objtree)/arch/x86/boot/bzImage
$(objtree)/%.ko: $(objtree)/%.o
	@echo "  LD [M]  $*.ko"
	@$(CC) -r -nostdlib -o $@ $<
modules: $(MODS)
	@echo $(patsubst $(objtree)/%,%,$(MODS)) | tr ' ' '\n' > $(objtree)/modules.order
"""

KERNEL_SOURCES = {
    "init/main.c": "int start_kernel(void) { return 0; }\n",
    "kernel/fork.c": "int copy_process(int x) { return x + 1; }\n",
    "arch/x86/xen/enlighten_pv.c": "void xen_start_kernel(void) { }\n",
    "drivers/xen/xen-pciback/pci_stub.c": "int xen_pcibk_init(void) { return 0; }\n",
    "drivers/block/xen-blkback/blkback.c": "int xen_blkif_init(void) { return 0; }\n",
}

XEN_FILES = {
    "Makefile": ".PHONY: build-xen\nbuild-xen:\n\t$(MAKE) -C xen build\n\n"
                "xen: dist-xen\ndist-xen:\n\t$(MAKE) -C xen build\n",
    "xen/Makefile": (
        "OBJS := common/kernel.o common/sched.o arch/x86/setup.o\n"
        ".PHONY: build\n"
        "build: xen.gz\n"
        "xen.gz: xen-syms\n\t@echo '  GZIP    xen.gz'\n\t@gzip -n -c $< > $@\n"
        "xen-syms: $(OBJS)\n\t@echo '  LD      xen-syms'\n\t@$(CC) -r -nostdlib -o $@ $^\n"
        "%.o: %.c\n\t@echo '  CC      $@'\n\t@$(CC) -c -O1 -o $@ $<\n"
    ),
    "xen/common/kernel.c": "int do_xen_version(int cmd) { return cmd; }\n",
    "xen/common/sched.c": "int scheduler_init(void) { return 0; }\n",
    "xen/arch/x86/setup.c": "void __start_xen(void) { }\n",
}

FRAGMENT = """# dom0 essentials for the tiny tree
CONFIG_MODULES=y
CONFIG_PCI=y
CONFIG_XEN=y
CONFIG_XEN_BACKEND=y
CONFIG_XEN_BLKDEV_BACKEND=m
"""


def kernel_tree(root: Path) -> Path:
    """tests/fake_kernel.py's config-only tree plus build targets and C sources."""
    tree = fake_kernel.make_tree(root)
    with open(tree / "Makefile", "a") as f:
        f.write(BUILD_RULES.replace("{release}", RELEASE))
    for name, text in KERNEL_SOURCES.items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_text(text)
    return tree


def git_tree(path: Path, files: dict[str, str], tag: str = "v1.0") -> git.Repo:
    """A git upstream holding *files* (and what is already in *path*) in one commit, tagged
    (a pinned rev: fetch is a no-op)."""
    repo = git.Repo.init(path, initial_branch="main")
    with repo.config_writer() as cw:
        cw.set_value("user", "name", "Test")
        cw.set_value("user", "email", "test@example.org")
    for name, text in files.items():
        f = path / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    repo.git.add("--all")
    repo.index.commit("tree")
    repo.create_tag(tag)
    return repo

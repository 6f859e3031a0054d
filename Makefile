# k42vmm: build, run and test.
#
#   make            build the default image and k42vmm
#   make run        boot the default image on every host CPU
#   make test       lint, unit tests and whole-system boot tests
#   make bench-boot boot-time benchmark against a bare-VM baseline
#   make bench-platform what virtualisation costs guest code, vs the host
#   make bench      sweep the default suite over vCPU counts (k42vmm bench)
#   make bench-linux  the Linux personality vs host Linux, same static binary
#   make nightly    the nightly regression job: sweep, compare with the
#                   accepted baseline of this host class, add the run to
#                   the history, find change points with Apache Otava,
#                   write the report
#   make bench-accept  accept the last nightly results as that baseline
#   make bench-trace  ns per trace event, enabled and disabled, vs an empty loop
#
# Everything installs what it needs itself (the Rust target for the guest,
# Apache Otava in a virtual environment under target/otava).

CARGO      ?= cargo
GUEST      := x86_64-unknown-none
KERNEL     := target/$(GUEST)/release/k42-kernel
IMAGE      := target/images/default.img
K42VMM     := target/release/k42vmm
BASELINES  := bench/baselines
NIGHTLY    := target/bench/nightly
# Every nightly run, one CSV per host class (`k42vmm bench history add`).
HISTORY    := bench/history
# Apache Otava, the change-point detector `make nightly` runs on the
# history, from PyPI into a virtual environment (pinned: k42vmm reads its
# JSON output).
OTAVA_VERSION := 0.8.0
OTAVA_VENV := target/otava
OTAVA      := $(OTAVA_VENV)/bin/otava
# The measuring program of `k42vmm bench --suite linux`, a static Linux
# program the default image carries (/bin/k42-lbench).
LBENCH     := target/linux/k42-lbench

# The guest packages, built for $(GUEST) (the only list of them; the root
# Cargo.toml's default-members leaves them out). The user programs are
# every package under guest-servers/ but the runtime k42-rt: the package
# name is the first `name =` of each Cargo.toml. Each needs its
# no-debug-info profile in the root Cargo.toml (check-guest-profiles).
GUEST_USER_PACKAGES := $(shell awk -F'"' 'FNR == 1 { p = 1 } p && /^name *=/ { print $$2; p = 0 }' \
	$(filter-out guest-servers/rt/Cargo.toml,$(wildcard guest-servers/*/Cargo.toml)))
GUEST_PACKAGES      := k42-kernel $(GUEST_USER_PACKAGES)
# Linted for $(GUEST) too: the guest packages and the libraries only they link.
GUEST_LINT_PACKAGES := $(GUEST_PACKAGES) k42-rt k42-trace

.PHONY: all setup kernel image vmm run test lint check-guest-profiles unit-test bench-boot bench-platform bench bench-linux nightly bench-accept bench-trace clean

all: image vmm

# The guest target is not installed automatically (RUSTUP_AUTO_INSTALL=0).
# The trace tests read k42vmm's CTF traces back with babeltrace2.
setup:
	@rustup target list --installed 2>/dev/null | grep -qx $(GUEST) || rustup target add $(GUEST)
	@command -v babeltrace2 >/dev/null || { echo "installing babeltrace2 (the trace tests read CTF traces with it)"; \
		apt-get install -y -q babeltrace2 >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q babeltrace2 >/dev/null; }; }
	@test -x /bin/busybox && test -x /bin/bash-static || { echo "installing busybox-static and bash-static (the default image runs Debian's own static Linux binaries)"; \
		apt-get install -y -q busybox-static bash-static >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q busybox-static bash-static >/dev/null; }; }
	@$(OTAVA_VENV)/bin/python -c 'import importlib.metadata as m, sys; sys.exit(m.version("apache-otava") != "$(OTAVA_VERSION)")' 2>/dev/null || { \
		echo "installing apache-otava $(OTAVA_VERSION) into $(OTAVA_VENV) (make nightly finds change points in the history with it)"; \
		python3 -m venv $(OTAVA_VENV) >/dev/null 2>&1 || { rm -rf $(OTAVA_VENV); apt-get install -y -q python3-venv >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q python3-venv >/dev/null; }; python3 -m venv $(OTAVA_VENV); } && \
		$(OTAVA_VENV)/bin/pip install -q --disable-pip-version-check apache-otava==$(OTAVA_VERSION); }
	@test -x /usr/bin/postmark || { echo "installing postmark (the default image runs Debian's dynamically linked postmark)"; \
		apt-get install -y -q postmark >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q postmark >/dev/null; }; }
	@command -v gcc >/dev/null && test -f /usr/lib/x86_64-linux-gnu/libc.a || { echo "installing gcc and libc6-dev (the Linux benchmark's k42-lbench and the static C test programs are built with gcc -static)"; \
		apt-get install -y -q gcc libc6-dev >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q gcc libc6-dev >/dev/null; }; }

# Static C test programs (tests/linux-c) for the default image: bad
# pointers and bad programs (badinput), the system-call fuzzer (fuzz), stop
# and continue (jobctl), the alternate signal stack (altstack), pthreads
# (threads).
LINUX_PROGS := target/linux/badinput target/linux/fuzz target/linux/jobctl target/linux/altstack target/linux/threads

target/linux/%: tests/linux-c/%.c | setup
	@mkdir -p target/linux
	gcc -static -pthread -O2 -Wall -o $@ $<

# Dynamically linked C test programs (plain gcc: PIE, dynamic, the
# Debian default); the image holds them with the host's ld.so, the
# libraries ldd lists and /etc/ld.so.cache (images/default.toml
# [[linux_programs]]).
DYN_PROGS := target/linux/dyntest

$(DYN_PROGS): target/linux/%: tests/linux-c/%.c | setup
	@mkdir -p target/linux
	gcc -O2 -Wall -Wextra -o $@ $<

kernel: setup
	$(CARGO) build $(addprefix -p ,$(GUEST_PACKAGES)) --target $(GUEST) --release

$(LBENCH): bench/linux/k42-lbench.c | setup
	@mkdir -p $(dir $@)
	gcc -static -O2 -Wall -Wextra -Werror -o $@ $<

# The same empty program static and dynamically linked (exec's cost of
# dynamic linking, in the Linux benchmark).
LTRUE := target/linux/k42-true-static target/linux/k42-true-dynamic

target/linux/k42-true-static: bench/linux/k42-true.c | setup
	@mkdir -p $(dir $@)
	gcc -static -O2 -Wall -Wextra -Werror -o $@ $<

target/linux/k42-true-dynamic: bench/linux/k42-true.c | setup
	@mkdir -p $(dir $@)
	gcc -O2 -Wall -Wextra -Werror -o $@ $<

image: kernel $(LBENCH) $(LTRUE) $(LINUX_PROGS) $(DYN_PROGS)
	$(CARGO) run -q --release -p k42-image --bin k42-mkimage -- images/default.toml -o $(IMAGE)

vmm:
	$(CARGO) build --release -p k42vmm

# The image's own job (kernel tests, then init.rc), then a Linux shell
# script run by Debian's busybox on the K42 kernel.
LINUX_DEMO := echo "Linux on K42: $$(/bin/busybox uname -sm)"; echo $$((6*7)) | /bin/busybox wc -c; \
	/bin/busybox ls /bin /etc | /bin/busybox sort | /bin/busybox head -4

run: image vmm
	$(K42VMM) run $(IMAGE)
	$(K42VMM) run --vcpus 2 $(IMAGE) -- /bin/busybox sh -c '$(LINUX_DEMO)'

lint: setup check-guest-profiles
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy $(addprefix -p ,$(GUEST_LINT_PACKAGES)) --target $(GUEST) --release -- -D warnings

# Every user program travels in the boot image without debug info: its
# package needs `strip = "debuginfo"` in the root Cargo.toml.
check-guest-profiles:
	@for p in $(GUEST_USER_PACKAGES); do \
		awk -v s="[profile.release.package.$$p]" '$$0 == s { p = 1; next } /^\[/ { p = 0 } p && /^strip *= *"debuginfo"/ { f = 1 } END { exit !f }' Cargo.toml || \
		{ echo "Cargo.toml: user program package $$p has no [profile.release.package.$$p] with strip = \"debuginfo\""; exit 1; }; \
	done

unit-test: image
	$(CARGO) test --release

test: lint unit-test

bench-boot: image vmm
	$(CARGO) build --release -p k42vmm --bins
	target/release/k42vmm-bench-boot --image $(IMAGE)

bench-platform: image vmm
	$(CARGO) build --release -p k42vmm --bins
	target/release/k42vmm-bench-platform --image $(IMAGE)

bench: image vmm
	$(K42VMM) bench --out target/bench/latest $(IMAGE)

bench-linux: image vmm
	$(K42VMM) bench --suite linux --out target/bench/linux $(IMAGE)

# The nightly job: the default suite, compared with the accepted baseline
# of this host class (bench/baselines/<class>.json, see
# `k42vmm bench host-class`) when there is one, then added to the
# history $(HISTORY)/<class>.csv and analysed there by Apache Otava. The
# report is $(NIGHTLY)/report.md, Otava's change points at its end.
# Exit 1 on a regression: while the history has fewer runs than
# `k42vmm bench history analyze --min-runs` (10), by the baseline rule;
# from then on, a new regressing change point by Otava (docs/BENCH.md).
# A sweep that fails before writing results.json (a boot or host
# failure, bad input) stops the job with its exit status.
nightly: image vmm setup
	@class=$$($(K42VMM) bench host-class) || exit 2; \
	base=$(BASELINES)/$$class.json; \
	rm -f $(NIGHTLY)/results.json; \
	if [ -f "$$base" ]; then \
		echo "$(K42VMM) bench --suite nightly --out $(NIGHTLY) --baseline $$base $(IMAGE)"; \
		$(K42VMM) bench --suite nightly --out $(NIGHTLY) --baseline "$$base" $(IMAGE); rc=$$?; \
	else \
		echo "make nightly: no accepted baseline for host class $$class ($$base): measuring without a comparison; accept the results with make bench-accept"; \
		$(K42VMM) bench --suite nightly --out $(NIGHTLY) $(IMAGE); rc=$$?; \
	fi; \
	if [ ! -f $(NIGHTLY)/results.json ] || [ $$rc -gt 1 ]; then exit $$rc; fi; \
	$(K42VMM) bench history add $(NIGHTLY)/results.json --history $(HISTORY) || exit $$?; \
	regressed=; if [ $$rc -eq 1 ]; then regressed=--baseline-regressed; fi; \
	echo "$(K42VMM) bench history analyze $(HISTORY)/$$class.csv --otava $(OTAVA) --report $(NIGHTLY)/report.md $$regressed"; \
	$(K42VMM) bench history analyze $(HISTORY)/$$class.csv --otava $(OTAVA) --report $(NIGHTLY)/report.md $$regressed

# Accept the last nightly results as the baseline of their host class;
# commit the file it writes.
bench-accept: vmm
	$(K42VMM) bench accept $(NIGHTLY)/results.json --baselines $(BASELINES)

bench-trace: image vmm
	$(CARGO) build --release -p k42vmm --bins
	target/release/k42vmm-bench-trace --image $(IMAGE)

clean:
	$(CARGO) clean

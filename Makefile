# k42vmm: build, run and test.
#
#   make            build the default image and k42vmm
#   make run        boot the default image on every host CPU
#   make test       lint, unit tests and whole-system boot tests
#   make bench-boot boot-time benchmark against a bare-VM baseline
#   make bench-platform what virtualisation costs guest code, vs the host
#
# Everything installs what it needs itself (the Rust target for the guest).

CARGO      ?= cargo
GUEST      := x86_64-unknown-none
KERNEL     := target/$(GUEST)/release/k42-kernel
IMAGE      := target/images/default.img
K42VMM     := target/release/k42vmm

.PHONY: all setup kernel image vmm run test lint unit-test bench-boot bench-platform clean

all: image vmm

# The guest target is not installed automatically (RUSTUP_AUTO_INSTALL=0).
setup:
	@rustup target list --installed 2>/dev/null | grep -qx $(GUEST) || rustup target add $(GUEST)

kernel: setup
	$(CARGO) build -p k42-kernel -p k42-usertest -p k42-platform-bench -p k42-cobj-bench --target $(GUEST) --release

image: kernel
	$(CARGO) run -q --release -p k42-image --bin k42-mkimage -- images/default.toml -o $(IMAGE)

vmm:
	$(CARGO) build --release -p k42vmm

run: image vmm
	$(K42VMM) run $(IMAGE)

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy -p k42-kernel -p k42-rt -p k42-usertest -p k42-platform-bench -p k42-cobj-bench --target $(GUEST) --release -- -D warnings

unit-test: image
	$(CARGO) test --release

test: lint unit-test

bench-boot: image vmm
	$(CARGO) build --release -p k42vmm --bins
	target/release/k42vmm-bench-boot --image $(IMAGE)

bench-platform: image vmm
	$(CARGO) build --release -p k42vmm --bins
	target/release/k42vmm-bench-platform --image $(IMAGE)

clean:
	$(CARGO) clean

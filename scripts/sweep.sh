#!/usr/bin/env bash
# scripts/sweep.sh OUTDIR [VCPU_COUNTS] [SAMPLES]
#
# Scaling sweep with prebuilt binaries only (for a bigger machine that has
# /dev/kvm but no Rust toolchain): copy target/release/k42vmm* and
# target/images/default.img there, then run this from the repository root.
# Writes one run report per (vCPU count, sample) for the clustered-object
# benchmarks, the platform benchmark at the largest count, the boot
# benchmark, and the host's topology, into OUTDIR.
set -euo pipefail
out=${1:?usage: scripts/sweep.sh OUTDIR [VCPU_COUNTS] [SAMPLES]}
counts=${2:-1,2,4,8,16}
samples=${3:-3}
bin=target/release
img=target/images/default.img
mkdir -p "$out"
"$bin/k42vmm" topology --json > "$out/topology.json"
{ nproc; lscpu 2>/dev/null || true; } > "$out/host.txt"
max=1
for n in ${counts//,/ }; do
  max=$n
  for s in $(seq 1 "$samples"); do
    "$bin/k42vmm" run --vcpus "$n" --timeout 300s --cmdline "test=none bench=cobj" \
      --report "$out/cobj-$n-$s.json" "$img" > "$out/cobj-$n-$s.log" 2>&1 || echo "cobj $n $s failed: $?" >> "$out/errors.txt"
  done
done
"$bin/k42vmm-bench-platform" --image "$img" --vcpus "$max" > "$out/platform.txt" 2>&1 || echo "platform failed" >> "$out/errors.txt"
"$bin/k42vmm-bench-boot" --image "$img" --samples 5 > "$out/boot.txt" 2>&1 || echo "boot failed" >> "$out/errors.txt"
echo done

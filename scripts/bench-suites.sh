#!/usr/bin/env bash
# scripts/bench-suites.sh OUTDIR VCPU_COUNTS SAMPLES NAME...
#
# `k42vmm bench` sweeps with prebuilt binaries only (for a bigger machine
# that has /dev/kvm but no Rust toolchain): copy target/release/k42vmm and
# target/images/default.img there, then run this from the repository
# root. Each NAME is a suite (`fs`) or a benchmark (`fs.ops`); each sweep
# goes to OUTDIR/NAME (results.json, plots, report.md) and its summary to
# OUTDIR/NAME.txt, one after another, so a sweep cut short keeps the ones
# before it. The host's topology goes to OUTDIR/topology.json.
set -uo pipefail
out=${1:?usage: scripts/bench-suites.sh OUTDIR VCPU_COUNTS SAMPLES NAME...}
counts=${2:?vCPU counts, e.g. 1,2,4,8,16}
samples=${3:?samples per point}
shift 3
bin=target/release/k42vmm
img=target/images/default.img
mkdir -p "$out"
"$bin" topology --json > "$out/topology.json" 2>&1
for name in "$@"; do
  case $name in
    *.*) sel=(--bench "$name") ;;
    *) sel=(--suite "$name") ;;
  esac
  start=$(date +%s)
  "$bin" bench "${sel[@]}" --vcpus "$counts" --samples "$samples" --out "$out/$name" "$img" \
    > "$out/$name.txt" 2>&1 || echo "$name: exit $?" >> "$out/errors.txt"
  echo "$name: $(( $(date +%s) - start )) s" >> "$out/times.txt"
done
echo done >> "$out/times.txt"

#!/usr/bin/env bash
# Builds the three Lambda zips as they ship (target/lambda/<function>/bootstrap.zip), for x86_64
# Lambda by default or Graviton with --arm64. Extra arguments go to `cargo lambda build`.
#
# CPU: x86_64 builds use -C target-cpu=x86-64-v3 (AVX2, FMA, BMI2: every x86 Lambda host has
# them; tract's convolutions run ~25 % faster than generic x86-64). arm64 builds use neoverse-n1
# (Graviton2, the oldest arm64 Lambda host). Never `native`: the build machine is not the host.
# RUSTFLAGS, when set, wins.
# Needs cargo-lambda (pip install cargo-lambda) and, for --arm64, the aarch64 rust target.
set -euo pipefail
cd "$(dirname "$0")/.."
arch=--x86-64
cpu=x86-64-v3
if [ "${1:-}" = --arm64 ]; then
  arch=--arm64
  cpu=neoverse-n1
  shift
fi
export RUSTFLAGS="${RUSTFLAGS:--C target-cpu=$cpu}"
exec cargo lambda build --release "$arch" --output-format zip \
  -p validator -p publisher -p inference "$@"

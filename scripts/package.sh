#!/usr/bin/env bash
# Builds the three Lambda zips as they ship (target/lambda/<function>/bootstrap.zip), for x86_64
# Lambda by default or Graviton with --arm64. Extra arguments go to `cargo lambda build`.
#
# CPU: x86_64 builds use -C target-cpu=x86-64-v3 (AVX2, FMA, BMI2: every x86 Lambda host has
# them; tract's convolutions run ~25 % faster than generic x86-64). arm64 builds use neoverse-n1
# (Graviton2, the oldest arm64 Lambda host). Never `native`: the build machine is not the host.
# RUSTFLAGS, when set, wins.
#
# ONNX Runtime: the validator and inference zips carry libonnxruntime.so beside `bootstrap`,
# taken from the onnxruntime wheel for the target architecture (pip download, cached in
# target/lambda/.onnxruntime); the functions find it there without configuration.
# Needs cargo-lambda (pip install cargo-lambda), pip, and for --arm64 the aarch64 rust target.
set -euo pipefail
cd "$(dirname "$0")/.."
arch=--x86-64
cpu=x86-64-v3
machine=x86_64
if [ "${1:-}" = --arm64 ]; then
  arch=--arm64
  cpu=neoverse-n1
  machine=aarch64
  shift
fi
ORT_VERSION=$(sed -n 's/^onnxruntime==//p' scripts/requirements-test.txt)
cache=target/lambda/.onnxruntime/$machine
if ! ls "$cache"/libonnxruntime.so* >/dev/null 2>&1; then
  mkdir -p "$cache"
  # Any manylinux up to glibc 2.34 runs on Lambda's Amazon Linux 2023.
  platforms=()
  for glibc in 2_34 2_28 2_27 2_17; do platforms+=(--platform "manylinux_${glibc}_$machine"); done
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    "${platforms[@]}" --python-version 3.11 -d "$cache" "onnxruntime==$ORT_VERSION"
  python3 - "$cache" <<'PY'
import glob, sys, zipfile
cache = sys.argv[1]
wheel = zipfile.ZipFile(glob.glob(f"{cache}/onnxruntime-*.whl")[0])
name = next(n for n in wheel.namelist() if n.startswith("onnxruntime/capi/libonnxruntime.so"))
open(f"{cache}/libonnxruntime.so", "wb").write(wheel.read(name))
PY
fi
export RUSTFLAGS="${RUSTFLAGS:--C target-cpu=$cpu}"
cargo lambda build --profile lambda "$arch" -p validator -p publisher -p inference "$@"
python3 scripts/lambda_zip.py target/lambda target/lambda --onnxruntime "$cache/libonnxruntime.so"

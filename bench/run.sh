#!/usr/bin/env bash
# modelpipe side by side with the Python onnxruntime handler: builds what it measures (the
# Lambda zips as they ship, modelctl and the harness optimised), installs the baseline's Python
# packages in bench/.venv, runs every comparison and rewrites the generated part of
# BENCHMARKS.md. Arguments go to the harness: --rounds N (5), --cycles N (10), --only SECTIONS.
# Needs: the Rust toolchain, Python 3.11, the aws CLI, sha256sum, openssl. From a clean clone the
# release build of the three functions takes ~40 minutes on 2 cores; the comparisons ~15.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x bench/.venv/bin/python ] || python3 -m venv bench/.venv
bench/.venv/bin/pip install --quiet --disable-pip-version-check -r bench/requirements.txt
export PATH="$PWD/bench/.venv/bin:$PATH"
bash scripts/package.sh
cargo build --profile profiling -p modelpipe-bench -p modelctl
exec target/profiling/compare "$@"

#!/usr/bin/env bash
# The project's test command: builds the workspace (the end-to-end tests run the function binaries
# from target/debug), runs every Rust test, then the CDK app's tests (offline synth, assertions,
# cfn-lint), then each fuzz target for a bounded time (MODELPIPE_FUZZ_SECONDS [20]).
# Needs what scripts/setup.sh installs (.venv, infra/node_modules, cargo-fuzz).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --locked
status=0
cargo nextest run --workspace --locked --no-fail-fast "$@" || status=$?
(cd infra && npm test) || status=$?
bash scripts/fuzz.sh "${MODELPIPE_FUZZ_SECONDS:-20}" || status=$?
exit $status

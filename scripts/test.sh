#!/usr/bin/env bash
# The project's test command: builds the workspace (the end-to-end tests run the function binaries
# from target/debug) and runs every test. Needs moto_server and cargo-lambda, from .venv (made by
# .ci/run or scripts/setup.sh) or PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --locked
cargo nextest run --workspace --locked --no-fail-fast "$@"

#!/usr/bin/env bash
# Installs what the tests need, skipping what is already installed and unchanged (so
# scripts/test.sh calls it every run): moto (the AWS APIs), cargo-lambda (the Lambda runtime
# API), tritonclient (the stock OIP client), onnxruntime (the reference answers, the baseline and
# the library the ONNX Runtime engine opens), schemathesis, cfn-lint and model-signing (the
# OpenSSF signing CLI the signed-model tests sign with) into .venv; the CDK app's
# node modules into infra/node_modules; cargo-nextest.
set -euo pipefail
cd "$(dirname "$0")/.."

# Installs are keyed by a hash of what they install from: a changed lock file reinstalls.
fresh() { [ -f "$1" ] && [ "$(cat "$1")" = "$(sha256sum "$2" | cut -d' ' -f1)" ]; }
stamp() { sha256sum "$2" | cut -d' ' -f1 >"$1"; }

[ -x .venv/bin/python ] || python3 -m venv .venv
if ! fresh .venv/.modelpipe-requirements scripts/requirements-test.txt; then
  .venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements-test.txt
  stamp .venv/.modelpipe-requirements scripts/requirements-test.txt
fi
# The CDK app's dependencies (aws-cdk-lib, the cdk CLI, tsx), exactly as locked.
if ! fresh infra/node_modules/.modelpipe-lock infra/package-lock.json; then
  (cd infra && npm ci --no-audit --no-fund --loglevel=error)
  stamp infra/node_modules/.modelpipe-lock infra/package-lock.json
fi
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest

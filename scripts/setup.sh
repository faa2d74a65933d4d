#!/usr/bin/env bash
# Installs the test tools into .venv: moto (the AWS APIs), cargo-lambda (the Lambda runtime API),
# tritonclient (the stock OIP client), onnxruntime (the reference answers and the baseline),
# schemathesis and cfn-lint; then the CDK app's node modules and cargo-fuzz.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements-test.txt
# The CDK app's dependencies (aws-cdk-lib, the cdk CLI, tsx), exactly as locked.
(cd infra && npm ci --no-audit --no-fund --loglevel=error)
# The fuzzer driver (scripts/fuzz.sh).
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz@0.13.2

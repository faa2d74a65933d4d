#!/usr/bin/env bash
# Installs the test tools into .venv: moto (the AWS APIs), cargo-lambda (the Lambda runtime API),
# tritonclient (the stock OIP client) and onnxruntime (the reference answers and the baseline).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements-test.txt

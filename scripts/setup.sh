#!/usr/bin/env bash
# Installs the test tools into .venv: moto (the AWS APIs) and cargo-lambda (the Lambda runtime API).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements-test.txt

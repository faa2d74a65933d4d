#!/usr/bin/env bash
# The project's one test command, from a fresh clone or a warm one:
#   1. installs what the tests need (scripts/setup.sh; skips what is already there),
#   2. starts one moto_server for the run (unless MODELPIPE_MOTO_ENDPOINT names one),
#   3. builds the workspace (the end-to-end tests run the function binaries from target/debug),
#   4. runs every Rust test with cargo nextest (arguments go to it), the fuzz targets' committed
#      corpora replayed among them (tests/tests/fuzz_corpora.rs),
#   5. runs the CDK app's tests (offline synth, assertions, cfn-lint),
# and prints each stage's duration. libFuzzer itself runs on demand: bash scripts/fuzz.sh SECONDS.
set -euo pipefail
cd "$(dirname "$0")/.."

stages=()
run_started=$SECONDS
stage_started=$SECONDS
end_stage() {
  [ -n "${current:-}" ] && stages+=("$(printf '%-26s %5ss' "$current" $((SECONDS - stage_started)))")
  current=
}
stage() { # NAME: ends the stage that was running, starts NAME
  end_stage
  current=$1
  stage_started=$SECONDS
  echo "── $1"
}
report() {
  end_stage
  echo "── stage durations"
  printf '  %s\n' "${stages[@]}"
  printf '  %-26s %5ss\n' total $((SECONDS - run_started))
}
trap 'status=$?; report; kill ${moto_pid:-} 2>/dev/null || true; exit $status' EXIT

stage "install test tools"
bash scripts/setup.sh

if [ -z "${MODELPIPE_MOTO_ENDPOINT:-}" ]; then
  stage "start moto_server"
  moto_log=$(mktemp -t modelpipe-moto.XXXXXX)
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  .venv/bin/moto_server -H 127.0.0.1 -p "$port" >"$moto_log" 2>&1 &
  moto_pid=$!
  until python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" \
      "http://127.0.0.1:$port/moto-api/" 2>/dev/null; do
    kill -0 $moto_pid 2>/dev/null || { cat "$moto_log"; exit 1; }
    sleep 0.2
  done
  export MODELPIPE_MOTO_ENDPOINT="http://127.0.0.1:$port"
fi

stage "build workspace"
cargo build --workspace --all-targets --locked

status=0
stage "rust tests (nextest)"
cargo nextest run --workspace --locked --no-fail-fast "$@" || status=$?
stage "infra tests (npm test)"
(cd infra && npm test) || status=$?
exit $status

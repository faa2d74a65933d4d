#!/usr/bin/env bash
# Upload → first answer from the new version, through `modelctl dev` and the stock aws CLI.
# Alternates two ~14 MB models (1536×2304 linear+softmax) for ROUNDS uploads: they become v1 and
# v2, and from round 3 on an upload of identical bytes moves `live` back to the existing version
# (no new version). Prints each latency and the median. Usage: bench/upload_to_live.sh [ROUNDS] [RELOAD_CHECK_MS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-10}
reload_ms=${2:-100}
work=$(mktemp -d)
dev_pid=""
trap 'kill $dev_pid 2>/dev/null; rm -rf "$work"' EXIT
cargo build -q --workspace
target/debug/write_model linear:1536,2304 "$work/a.onnx" 1
target/debug/write_model linear:1536,2304 "$work/b.onnx" 2
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
s3=$(port); http=$(port)
RUST_LOG=warn target/debug/modelctl dev --data "$work/data" --s3-addr "127.0.0.1:$s3" --http-addr "127.0.0.1:$http" \
  --reload-check-ms "$reload_ms" >"$work/dev.log" 2>&1 &
dev_pid=$!
until curl -fs "http://127.0.0.1:$http/v2/health/live" >/dev/null; do sleep 0.05; done
export AWS_ACCESS_KEY_ID=modelpipe AWS_SECRET_ACCESS_KEY=modelpipe AWS_DEFAULT_REGION=us-east-1
body=$(python3 -c 'import json; print(json.dumps({"inputs":[{"name":"x","shape":[1,1536],"datatype":"FP32","data":[0.5]*1536}],"outputs":[{"name":"y"}]}))')
echo "$body" > "$work/body.json"
version() { curl -fs -X POST "http://127.0.0.1:$http/v2/models/big/infer" -H 'content-type: application/json' \
  --data @"$work/body.json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["model_version"])' 2>/dev/null || echo none; }
echo "model: $(stat -c %s "$work/a.onnx") bytes; RELOAD_CHECK_MS=$reload_ms"
results=()
for i in $(seq 1 "$rounds"); do
  file=$([ $((i % 2)) -eq 1 ] && echo a || echo b)
  expect=$([ "$file" = a ] && echo 1 || echo 2)
  start=$(date +%s%N)
  aws --endpoint-url "http://127.0.0.1:$s3" s3 cp --quiet "$work/$file.onnx" s3://models/models/big/model.onnx
  uploaded=$(date +%s%N)
  until [ "$(version)" = "$expect" ]; do sleep 0.01; done
  done_at=$(date +%s%N)
  total=$(( (done_at - start) / 1000000 )); after=$(( (done_at - uploaded) / 1000000 ))
  echo "round $i: aws s3 cp start → v$expect answers: ${total} ms (after the upload completed: ${after} ms)"
  results+=("$after")
done
printf '%s\n' "${results[@]}" | sort -n | awk '{a[NR]=$1} END {print "median upload-complete → first answer: " a[int((NR+1)/2)] " ms (min " a[1] ", max " a[NR] ")"}'

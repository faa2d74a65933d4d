#!/usr/bin/env bash
# libFuzzer, on demand: each cargo-fuzz target (fuzz/fuzz_targets) run for SECONDS [60] with the
# sanitizers, from the committed corpus (fuzz/corpus/<target>, read-only here: new inputs go to a
# temporary directory). The committed corpora replay in every test run (tests/tests/fuzz_corpora.rs);
# this is the search for new inputs. The first run builds tract and friends with instrumentation
# (~20 minutes on two cores, in fuzz/target). Crashes are written to fuzz/artifacts/<target>/ and
# fail this script; add the input to fuzz/corpus/<target>/ with the fix.
#   bash scripts/fuzz.sh 3600
# The committed corpora were grown that way and merged edge-minimal (what adds coverage only):
#   cargo fuzz run --fuzz-dir fuzz TARGET fuzz/corpus/TARGET NEW_INPUTS_DIR -- -merge=1 -use_counters=0
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz@0.13.2
# The machine has the stable toolchain only; cargo-fuzz needs a few -Z flags (sanitizers).
export RUSTC_BOOTSTRAP=1
cargo fuzz build --fuzz-dir fuzz
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in $(cargo fuzz list --fuzz-dir fuzz); do
  mkdir -p "$scratch/$target"
  echo "fuzzing $target for ${seconds}s"
  if ! cargo fuzz run --fuzz-dir fuzz "$target" "$scratch/$target" "fuzz/corpus/$target" -- \
      -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 >"$scratch/$target.log" 2>&1; then
    tail -40 "$scratch/$target.log"
    echo "fuzzing $target found a crash: the input is in fuzz/artifacts/$target/"
    exit 1
  fi
  grep -E 'stat::(number_of_executed_units|new_units_added|peak_rss_mb)' "$scratch/$target.log" | sed 's/^/  /'
done

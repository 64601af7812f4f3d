#!/usr/bin/env bash
# Runs KVScope's libFuzzer targets one after another (the machine's cores are shared: one
# job each), from the committed seeds, growing a corpus under BUILD/fuzz-corpus/<target>
# (never committed). Crash inputs land in BUILD/fuzz-artifacts/.
#
#   tests/fuzz/fuzz.sh BUILD -max_total_time=10 [TARGET...]   what `ctest -L fuzz` runs
#   tests/fuzz/fuzz.sh BUILD -runs=1000000 [TARGET...]        the long run (issue 10)
#
# BUILD is a build of the `fuzz` preset (cmake --preset fuzz && cmake --build --preset fuzz).
# Without TARGETs, all of them. Prints each target's last status line (executions, cov:,
# ft:) and fails on the first crash, sanitizer report, leak or timeout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 2 ] || { echo "usage: $0 BUILD -max_total_time=SECONDS|-runs=N [TARGET...]" >&2; exit 2; }
build=$(cd "$1" && pwd)
limit=$2
shift 2
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(fuzz_gguf fuzz_safetensors fuzz_config_json fuzz_tokenizer_json fuzz_tokenizer fuzz_method_spec
           fuzz_session_import)
fi
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
for t in "${targets[@]}"; do
  exe=$build/tests/fuzz/$t
  [ -x "$exe" ] || { echo "fuzz.sh: $exe is not built (cmake --build --preset fuzz)" >&2; exit 1; }
  corpus=$build/fuzz-corpus/$t
  mkdir -p "$corpus" "$build/fuzz-artifacts"
  dict=()
  [ -f "$here/$t.dict" ] && dict=(-dict="$here/$t.dict")
  log=$build/fuzz-artifacts/$t.log
  echo "== $t ($limit)"
  # -timeout: one input taking 10 s is a hang; -rss_limit_mb: one needing 2 GB is a bug.
  if ! "$exe" "$limit" -timeout=10 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
       "${dict[@]}" -artifact_prefix="$build/fuzz-artifacts/$t-" "$corpus" "$here/corpus/$t" >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzz.sh: $t failed (log: $log)" >&2
    exit 1
  fi
  grep -E '^#[0-9]+' "$log" | tail -n 1
  grep -E '^stat::number_of_executed_units' "$log" || true
done

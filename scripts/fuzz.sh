#!/usr/bin/env bash
# Builds the libFuzzer harnesses of fuzz/ (clang, ASan + UBSan) and runs each: scripts/fuzz.sh [seconds] [target...].
# Per target it prints executions, coverage and findings (crash/leak/timeout/oom inputs, copied to fuzz/findings/);
# exits non-zero if any target found something. FUZZ_BUILD_DIR (default build-fuzz) holds the build and work corpora.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
seconds=${1:-600}
shift || true
all_targets=(gguf safetensors safetensors_index config tokenizer plan jinja openai)
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${all_targets[@]}")
build=${FUZZ_BUILD_DIR:-build-fuzz}
mkdir -p "$build"
build=$(cd "$build" && pwd)
jobs=$(nproc)

command -v clang++ >/dev/null || bash scripts/setup.sh

echo "== build the harnesses (fuzz/CMakeLists.txt: the parsers only, clang, ASan + UBSan) in $build"
cmake -S fuzz -B "$build" -G Ninja -DCMAKE_CXX_COMPILER=clang++ >"$build/configure.log"
ninja -C "$build" -j"$jobs" >"$build/build.log" || { tail -30 "$build/build.log"; exit 1; }
for t in "${targets[@]}"; do
  [ -x "$build/${t}_fuzz" ] || { echo "unknown target $t (known: ${all_targets[*]})"; exit 2; }
done

export ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export LSAN_OPTIONS=suppressions=$root/tests/lsan_suppressions.txt

# One target per core at a time; each writes its own log, the summary reads them in target order.
fuzz_one() {
  local t=$1 work=$build/corpus/$1 findings=$build/findings/$1
  mkdir -p "$work" "$findings"
  [ -d "fuzz/corpus/$t" ] && cp -n fuzz/corpus/"$t"/* "$work"/ 2>/dev/null || true
  set +e
  "$build/${t}_fuzz" "$work" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -max_len=65536 \
    -print_final_stats=1 -artifact_prefix="$findings/" >"$build/$t.log" 2>&1
  echo $? >"$build/$t.rc"
}
echo "== fuzz ${targets[*]} for ${seconds}s each, $jobs at a time"
running=0
for t in "${targets[@]}"; do
  rm -rf "$build/findings/$t" "$build/$t.rc"
  fuzz_one "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then wait -n || true; running=$((running - 1)); fi
done
wait

status=0
summary=()
for t in "${targets[@]}"; do
  log=$build/$t.log findings=$build/findings/$t
  rc=$(cat "$build/$t.rc" 2>/dev/null || echo 99)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  corpus=$(find "$build/corpus/$t" -type f | wc -l)
  mapfile -t found < <(find "$findings" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) | sort)
  if [ ${#found[@]} -gt 0 ] || [ "$rc" -ne 0 ]; then
    status=1
    mkdir -p "fuzz/findings/$t"
    for f in "${found[@]}"; do cp "$f" "fuzz/findings/$t/"; done
    echo "   $t: FOUND (rc $rc), see $log; inputs in fuzz/findings/$t/"
    grep -m3 -E 'ERROR: |runtime error|contract violation|SUMMARY' "$log" | sed 's/^/     /' || true
  fi
  summary+=("$(printf '%-12s executions %-10s cov %-6s ft %-6s corpus %-5s findings %s' "$t" "${execs:-?}" "${cov:-?}" "${ft:-?}" "$corpus" "${#found[@]}")")
done
echo "== summary (${seconds}s per target)"
printf '%s\n' "${summary[@]}"
exit $status

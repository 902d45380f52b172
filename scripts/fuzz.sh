#!/usr/bin/env bash
# Builds the libFuzzer harnesses of fuzz/ (clang, ASan + UBSan) and runs each: scripts/fuzz.sh [seconds] [target...].
# Per target it prints executions, coverage and findings (crash/leak/timeout/oom inputs, copied to fuzz/findings/);
# exits non-zero if any target found something. FUZZ_BUILD_DIR (default build-fuzz) holds the build and work corpora.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
seconds=${1:-600}
shift || true
all_targets=(gguf safetensors config tokenizer plan jinja openai)
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${all_targets[@]}")
build=${FUZZ_BUILD_DIR:-build-fuzz}
mkdir -p "$build"
build=$(cd "$build" && pwd)
jobs=$(nproc)

command -v clang++ >/dev/null || { echo "installing clang"; apt-get install -y clang >/dev/null; }
san="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"

echo "== uneven_core with clang + $san + fuzzer-no-link in $build"
cmake -S . -B "$build" -DCMAKE_CXX_COMPILER=clang++ -DUNEVEN_SANITIZE=ON \
  -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link" >"$build/configure.log"
cmake --build "$build" --target uneven_core -j"$jobs" >"$build/build.log" || { tail -30 "$build/build.log"; exit 1; }

# The include flags, definitions and libraries CMake uses for the library and for the uneven executable.
flags=$(sed -n 's/^CXX_\(DEFINES\|INCLUDES\) = //p' "$build/CMakeFiles/uneven_core.dir/flags.make" | tr '\n' ' ')
libs=$(sed -e 's/.* -o uneven //' -e "s#libuneven_core.a#$build/libuneven_core.a#" "$build/CMakeFiles/uneven.dir/link.txt")

mkdir -p "$build/bin"
for t in "${targets[@]}"; do
  src=fuzz/${t}_fuzz.cpp
  [ -f "$src" ] || { echo "unknown target $t (known: ${all_targets[*]})"; exit 2; }
  bin=$build/bin/${t}_fuzz
  if [ ! -x "$bin" ] || [ "$src" -nt "$bin" ] || [ fuzz/fuzz_common.h -nt "$bin" ] || [ "$build/libuneven_core.a" -nt "$bin" ]; then
    echo "== build $t"
    # shellcheck disable=SC2086
    clang++ -std=c++20 -O1 -g $san -fsanitize=fuzzer $flags -Ifuzz "$src" -o "$bin" $libs
  fi
done

export ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export LSAN_OPTIONS=suppressions=$root/tests/lsan_suppressions.txt

status=0
summary=()
for t in "${targets[@]}"; do
  work=$build/corpus/$t findings=$build/findings/$t
  mkdir -p "$work" "$findings"
  [ -d "fuzz/corpus/$t" ] && cp -n fuzz/corpus/"$t"/* "$work"/ 2>/dev/null || true
  log=$build/$t.log
  echo "== fuzz $t for ${seconds}s"
  set +e
  "$build/bin/${t}_fuzz" "$work" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -max_len=65536 \
    -print_final_stats=1 -artifact_prefix="$findings/" >"$log" 2>&1
  rc=$?
  set -e
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  mapfile -t found < <(find "$findings" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) | sort)
  if [ ${#found[@]} -gt 0 ] || { [ "$rc" -ne 0 ] && [ -z "$execs" ]; }; then
    status=1
    mkdir -p "fuzz/findings/$t"
    for f in "${found[@]}"; do cp "$f" "fuzz/findings/$t/"; done
    echo "   $t: FOUND (rc $rc), see $log; inputs in fuzz/findings/$t/"
    grep -m3 -E 'ERROR: |runtime error|contract violation|SUMMARY' "$log" | sed 's/^/     /' || true
  fi
  summary+=("$(printf '%-12s executions %-10s cov %-6s findings %s' "$t" "${execs:-?}" "${cov:-?}" "${#found[@]}")")
done
echo "== summary (${seconds}s per target)"
printf '%s\n' "${summary[@]}"
exit $status

#!/usr/bin/env bash
# The test command: installs what is missing, builds, and runs every test:
#   1. unit + integration tests (ctest) on the normal build (RelWithDebInfo);
#   2. unit tests under valgrind (no leaks, no invalid accesses), nproc
#      programs at a time, heavy random loops scaled down (docs/testing.md);
#   3. the builds a packager runs, warnings as errors: Release (GCC) and
#      RelWithDebInfo with clang (build only);
#   4. unit + integration tests on an ASan+UBSan build with assert() on;
#   5. the container test (tests/container/test_compose.py: the image and a
#      compose cluster), or one line saying why it is skipped (no Docker).
# Every stage fails loudly: a failed build, a ctest run that finds no test,
# or a valgrind stage that finds no test program stops the script non-zero.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
bash scripts/deps.sh
start=$(date +%s)

echo "== build (RelWithDebInfo)"
bash scripts/build.sh build
echo "== tests: unit + integration"
(cd build && ctest --output-on-failure --no-tests=error -j2 --timeout 300)

echo "== unit tests under valgrind"
# The programs run $(nproc) at a time (valgrind runs a program's threads one
# at a time: one program per core), each with its own log and exit status in
# a private directory; the results are
# printed in name order once all have ended. CHORUS_TEST_SCALE_DOWN=10 makes
# the heavy random loops run a tenth of their iterations here (or the minimum
# a test names), every path still taken (tests/unit/test_scale.h,
# docs/testing.md); the ctest stages run them in full.
vg_jobs=$(nproc)
vg_dir=$(mktemp -d /tmp/chorus-vg.XXXXXX)
trap 'rm -rf "$vg_dir"' EXIT
vg_start=$(date +%s)
vg_run() { # program index: its output to index.log, its exit status to index.rc
  local rc=0
  CHORUS_BUILD_DIR="$here/build" CHORUS_TEST_SCALE_DOWN=10 \
    valgrind -q --leak-check=full --errors-for-leak-kinds=definite,indirect \
      --error-exitcode=99 --trace-children=no "$1" >"$vg_dir/$2.log" 2>&1 || rc=$?
  echo "$rc" >"$vg_dir/$2.rc"
}
progs=()
for t in build/test_*; do
  if [ -f "$t" ] && [ -x "$t" ]; then progs+=("$t"); fi
done
for i in "${!progs[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$vg_jobs" ]; do wait -n || true; done
  vg_run "${progs[$i]}" "$i" &
done
wait
ran=0
fails=0
for i in "${!progs[@]}"; do
  t=${progs[$i]}
  ran=$((ran+1))
  # no status file (the runner itself died) is a failure too
  if [ "$(cat "$vg_dir/$i.rc" 2>/dev/null)" = 0 ]; then
    echo "valgrind: $t ok"
  else
    echo "valgrind: $t FAILED"; tail -40 "$vg_dir/$i.log"; fails=$((fails+1))
  fi
done
rm -rf "$vg_dir"
trap - EXIT
echo "valgrind: ran $ran unit test program(s), $fails failed, in $(( $(date +%s) - vg_start )) s"
[ "$ran" -gt 0 ] || { echo "valgrind: no unit test program found in build/ (test_*)"; exit 1; }
[ "$fails" -eq 0 ] || { echo "valgrind: $fails test program(s) failed"; exit 1; }

echo "== build Release (GCC, -Werror)"
bash scripts/build.sh build-release -DCMAKE_BUILD_TYPE=Release -DCHORUS_WERROR=ON
echo "== build with clang (-Werror)"
bash scripts/build.sh build-clang -DCMAKE_C_COMPILER=clang -DCHORUS_WERROR=ON

echo "== build with ASan + UBSan (asserts on)"
bash scripts/build.sh build-asan -DCHORUS_SANITIZE=ON -DCHORUS_ASSERTS=ON
echo "== tests under ASan + UBSan"
(cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
   ctest --output-on-failure --no-tests=error -j2 --timeout 300)
echo "== container test (deploy/: static image, compose cluster)"
python3 tests/container/test_compose.py
echo "test.sh: all stages passed in $(( $(date +%s) - start )) s"

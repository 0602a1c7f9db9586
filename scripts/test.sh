#!/usr/bin/env bash
# The test command: installs what is missing, builds, and runs every test:
#   1. unit + integration tests (ctest) on the normal build (RelWithDebInfo);
#   2. unit tests under valgrind (no leaks, no invalid accesses);
#   3. the builds a packager runs, warnings as errors: Release (GCC) and
#      RelWithDebInfo with clang (build only);
#   4. unit + integration tests on an ASan+UBSan build with assert() on.
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
ran=0
fails=0
vglog=$(mktemp /tmp/chorus-vg.XXXXXX)
for t in build/test_*; do
  [ -f "$t" ] && [ -x "$t" ] || continue
  ran=$((ran+1))
  if ! CHORUS_BUILD_DIR="$here/build" valgrind -q --leak-check=full --errors-for-leak-kinds=definite,indirect \
       --error-exitcode=99 --trace-children=no "$t" >"$vglog" 2>&1; then
    echo "valgrind: $t FAILED"; tail -40 "$vglog"; fails=$((fails+1))
  else
    echo "valgrind: $t ok"
  fi
done
rm -f "$vglog"
echo "valgrind: ran $ran unit test program(s), $fails failed"
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
echo "test.sh: all stages passed in $(( $(date +%s) - start )) s"

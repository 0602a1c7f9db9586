#!/usr/bin/env bash
# Installs the Debian 12 packages Chorus needs to build and test, when any is
# missing. As root it runs apt-get; otherwise it prints the exact command.
set -euo pipefail
# dpkg-dev and file: cpack's dependency list (dpkg-shlibdeps) for
# scripts/package.sh; debootstrap: the Debian base image of test_package.py
PKGS=(cmake gcc make pkg-config libnng-dev protobuf-c-compiler libprotobuf-c-dev libsodium-dev
      libsqlite3-dev libcmocka-dev libinih-dev libjansson-dev python3 valgrind procps clang
      libfaketime iproute2 tzdata redis-tools python3-redis dpkg-dev file debootstrap \
      libmbedtls-dev)
# test-only: promtool, which checks /metrics (tests/integration/test_metrics.py)
PKGS+=(prometheus)
# test-only: the dashboard's headless-browser test (tests/integration/test_dashboard.py,
# which skips without them); about 120 MB to download, 400 MB installed
PKGS+=(chromium chromium-driver python3-selenium)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "deps: missing packages: ${missing[*]}" >&2
  echo "deps: run as root:  $cmd" >&2
  exit 1
fi
echo "deps: installing ${missing[*]}"
eval "$cmd" >/tmp/chorus-apt.log 2>&1 || { tail -20 /tmp/chorus-apt.log; echo "deps: apt-get failed (log /tmp/chorus-apt.log)" >&2; exit 1; }

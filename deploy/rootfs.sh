#!/usr/bin/env bash
# rootfs.sh OUT BIN_DIR - lays out the files of the Chorus container image
# under OUT, for deploy/Dockerfile (from this machine's files) and
# deploy/Dockerfile.bookworm (inside its build stage): both images are the
# same. BIN_DIR holds a static chorusd and clusterctl (-DCHORUS_STATIC=ON).
#
#   OUT/rootfs/   copied to / (owned by root)
#     usr/bin/chorusd, usr/bin/clusterctl   stripped
#     etc/passwd, etc/group                 root and chorus (10001), no shells
#     etc/nsswitch.conf                     hosts: files dns (glibc's built-ins)
#     etc/chorus/chorus.conf                the image's settings (deploy/chorus-image.conf)
#     usr/share/zoneinfo/                   time zones for cron --tz
#     tmp/                                  mode 1777 (sqlite's temporary files)
#     var/lib/                              so that only chorus/ below is the user's
#   OUT/data/chorus/  copied to /var/lib/chorus, owned by chorus (10001), mode 0700
#                     (a directory copied whole keeps its mode; its contents would not)
#
# No certificates, no shell, no package manager: the two binaries talk only
# to each other, over links sealed with the cluster's own keys.
set -euo pipefail
if [ $# -ne 2 ]; then
  echo "usage: rootfs.sh OUT BIN_DIR" >&2
  exit 2
fi
out=$1
bin=$2
here=$(cd "$(dirname "$0")" && pwd)
for b in chorusd clusterctl; do
  # a dynamically linked program names its loader (an INTERP header)
  headers=$(readelf -lW "$bin/$b" 2>/dev/null) || headers=INTERP
  if [ ! -x "$bin/$b" ] || [[ $headers == *INTERP* ]]; then
    echo "rootfs.sh: $bin/$b is missing or not statically linked (build with -DCHORUS_STATIC=ON)" >&2
    exit 1
  fi
done

root=$out/rootfs
rm -rf "$root" "$out/data"
mkdir -p "$root/usr/bin" "$root/etc/chorus" "$root/usr/share" "$root/tmp" "$root/var/lib" \
  "$out/data/chorus"
install -m 0755 -s "$bin/chorusd" "$bin/clusterctl" "$root/usr/bin/"
cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/nonexistent
chorus:x:10001:10001:Chorus node:/var/lib/chorus:/nonexistent
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
chorus:x:10001:
EOF
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
install -m 0644 "$here/chorus-image.conf" "$root/etc/chorus/chorus.conf"
cp -a /usr/share/zoneinfo "$root/usr/share/"
rm -f "$root/usr/share/zoneinfo/localtime" # a link to the host's /etc/localtime
chmod 1777 "$root/tmp"
chmod 0700 "$out/data/chorus"

#!/usr/bin/env bash
# init.sh - makes the secrets deploy/docker-compose.yml mounts; run it once
# before the first `docker-compose up`, after the image is built:
#
#   cluster.secret  the cluster secret (clusterctl keygen): the nodes' key
#   client.key      a client credential from it (clusterctl keygen --client):
#                   what ctl and the health checks use; it cannot act as a node
#   resp.password   the RESP listener's password (32 random bytes, hex)
#
# in $CHORUS_SECRETS_DIR (default: secrets/ beside this script), the
# directory mode 0700, the files 0600 and owned by the image's user, 10001
# (CHORUS_FILE_OWNER=UID:GID for another, e.g. under a user namespace
# remap): chorusd refuses a key file that others can read, and the
# containers never run as root. Giving files to 10001 needs root; as another
# user the script runs `sudo chown`. Files that exist are kept, so running it
# again changes nothing. clusterctl runs from the image ($CHORUS_IMAGE,
# default localhost/chorus:latest): Docker is all the host needs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=${CHORUS_SECRETS_DIR:-$here/secrets}
image=${CHORUS_IMAGE:-localhost/chorus:latest}
owner=${CHORUS_FILE_OWNER:-10001:10001}

if ! docker image inspect "$image" >/dev/null 2>&1; then
  echo "init.sh: no image $image: build it first (deploy/build-image.sh, or docker-compose build)" >&2
  exit 1
fi
mkdir -p "$dir"
chmod 0700 "$dir"
dir=$(cd "$dir" && pwd)

# clusterctl in the image, as the caller's user, writing into $dir
ctl() {
  docker run --rm --network none --user "$(id -u):$(id -g)" -v "$dir:/out" \
    --entrypoint /usr/bin/clusterctl "$image" "$@" >/dev/null
}

made=()
if [ ! -e "$dir/cluster.secret" ]; then
  ctl keygen /out/cluster.secret
  made+=(cluster.secret)
fi
if [ ! -e "$dir/client.key" ]; then
  if [ ! -r "$dir/cluster.secret" ]; then
    echo "init.sh: $dir/cluster.secret exists but this user cannot read it to derive client.key;" \
         "run init.sh as root, or remove the files to start over" >&2
    exit 1
  fi
  ctl keygen --client /out/cluster.secret /out/client.key
  made+=(client.key)
fi
if [ ! -e "$dir/resp.password" ]; then
  (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/resp.password")
  made+=(resp.password)
fi
if [ ${#made[@]} -eq 0 ]; then
  echo "init.sh: $dir already holds cluster.secret, client.key and resp.password: kept"
  exit 0
fi

paths=()
for f in "${made[@]}"; do
  chmod 0600 "$dir/$f"
  paths+=("$dir/$f")
done
if [ "$(id -u)" -eq 0 ]; then
  chown "$owner" "${paths[@]}"
else
  echo "init.sh: giving ${made[*]} to $owner (the containers' user) with sudo"
  sudo chown "$owner" "${paths[@]}"
fi
echo "init.sh: made ${made[*]} in $dir (mode 0600, owner $owner)"

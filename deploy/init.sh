#!/usr/bin/env bash
# init.sh - makes the secrets deploy/docker-compose.yml mounts; run it once
# before the first `docker-compose up`, after the image is built:
#
#   cluster.secret  the cluster secret (clusterctl keygen): the nodes' key
#   client.key      a client credential from it (clusterctl keygen --client):
#                   what ctl and the health checks use; it cannot act as a node
#   resp.password   the RESP listener's password: 32 random bytes in hex
#
# in $CHORUS_SECRETS_DIR (default: secrets/ beside this script), the
# directory mode 0700, the files 0600 and owned by the image's user, 10001:
# chorusd refuses a key file that others can read, and the containers never
# run as root. Files that exist are kept, so running it again changes
# nothing.
#
# Neither root nor sudo is needed, only Docker: clusterctl runs from the
# image ($CHORUS_IMAGE, default localhost/chorus:latest) as the image's user
# (CHORUS_FILE_OWNER=UID:GID for another) and writes the files into a
# scratch directory inside $CHORUS_SECRETS_DIR; they are then moved beside
# it, which takes no ownership, only the right to write the directories.
# The files are therefore created by the containers' user as the engine
# maps it (under a user-namespace remap, the mapped uid). The scratch
# directory is open to every user (the container's must write it), but
# inside the 0700 directory no other user of the host reaches it.
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

need=()
for f in cluster.secret client.key resp.password; do
  if [ ! -e "$dir/$f" ]; then need+=("$f"); fi
done
if [ ${#need[@]} -eq 0 ]; then
  echo "init.sh: $dir already holds cluster.secret, client.key and resp.password: kept"
  exit 0
fi

scratch=$(mktemp -d "$dir/.init.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
chmod 0777 "$scratch"

# clusterctl in the image as the containers' user, the scratch directory
# as /out
ctl() {
  docker run --rm --network none --user "$owner" -v "$scratch:/out" ${mounts[@]+"${mounts[@]}"} \
    --entrypoint /usr/bin/clusterctl "$image" "$@" >/dev/null
}

mounts=()
for f in "${need[@]}"; do
  case $f in
    cluster.secret) ctl keygen /out/cluster.secret ;;
    client.key)
      # from the secret made now, else from the one kept (the file alone:
      # the containers' user cannot enter $dir)
      if [ -e "$scratch/cluster.secret" ]; then
        ctl keygen --client /out/cluster.secret /out/client.key
      else
        mounts=(-v "$dir/cluster.secret:/in/cluster.secret:ro")
        ctl keygen --client /in/cluster.secret /out/client.key
        mounts=()
      fi ;;
    resp.password)
      # a cluster secret is 32 random bytes in hex on one line: the
      # password's format, made by the containers' user like the rest
      ctl keygen /out/resp.password ;;
  esac
done
for f in "${need[@]}"; do
  mv "$scratch/$f" "$dir/$f"
done
echo "init.sh: made ${need[*]} in $dir (mode 0600, owner $owner)"

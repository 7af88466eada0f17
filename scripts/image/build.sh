#!/bin/sh
# Build the worker image with Docker where an engine answers, else with buildah (daemonless).
# Usage: scripts/image/build.sh        Env: IMAGE, TORCH_SOURCE (pypi, cpu or cu126: which
#        requirements/<source>.lock the image installs from; default pypi), PYTHON_IMAGE (the
#        base; with buildah, default a Debian-made one: scripts/image/base.sh), BUILDAH (the
#        buildah command, storage flags included).
# With buildah the host's pip configuration (`pip config list`: files and PIP_* variables), its
# CA bundle and the local wheel folders it names are mounted read-only into the build, as behind
# a corporate proxy; none of them lands in the image.
set -eu
cd "$(dirname "$0")/../.."
TORCH_SOURCE=${TORCH_SOURCE:-pypi}
BUILDAH=${BUILDAH:-buildah --storage-driver vfs}
start=$(date +%s)
[ -f "requirements/$TORCH_SOURCE.lock" ] || {
    echo "no requirements/$TORCH_SOURCE.lock: make lock writes it where its index answers" >&2
    exit 1; }

if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    IMAGE=${IMAGE:-posefleet-worker:$TORCH_SOURCE}
    set -- --build-arg "TORCH_SOURCE=$TORCH_SOURCE"
    [ -n "${PYTHON_IMAGE:-}" ] && set -- "$@" --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE"
    docker build "$@" -t "$IMAGE" .
    size=$(docker image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.2f GB", $1/1e9}')
elif command -v buildah >/dev/null 2>&1; then
    IMAGE=${IMAGE:-localhost/posefleet-worker:$TORCH_SOURCE}
    if [ -z "${PYTHON_IMAGE:-}" ]; then
        PYTHON_IMAGE=localhost/posefleet-base:bookworm
        BUILDAH="$BUILDAH" scripts/image/base.sh "$PYTHON_IMAGE"
    fi
    pip_cmd="python3 -m pip"
    $pip_cmd --version >/dev/null 2>&1 || pip_cmd=pip3
    conf=$(mktemp "${TMPDIR:-/tmp}/posefleet-pip.XXXXXX")
    trap 'rm -f "$conf"' EXIT
    # One [global] section from every source pip reads here; PIP_* variables (":env:", sorted
    # first) win over files, as in pip.
    { echo "[global]"; $pip_cmd config list 2>/dev/null | LC_ALL=C sort \
        | sed -n "s/^[^.]*\.\([a-z-]*\)='\(.*\)'$/\1 = \2/p" | awk '!seen[$1]++'; } >"$conf"
    chmod 644 "$conf"
    set -- --volume "$conf:/etc/pip.conf:ro"
    # The CA bundle and every local folder the configuration names (find-links, file:// indexes).
    for path in $(sed -n 's/^[a-z-]* = //p' "$conf" | tr ' ' '\n' | sed 's,^file://,,' \
            | grep '^/' | sed 's,/simple/*$,,' | sort -u); do
        [ -e "$path" ] && set -- "$@" --volume "$path:$path:ro"
    done
    echo "building $IMAGE on $PYTHON_IMAGE"
    $BUILDAH bud --isolation chroot --layers=false "$@" \
        --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" --build-arg "TORCH_SOURCE=$TORCH_SOURCE" \
        -t "$IMAGE" .
    # The build stage's image is not needed once the runtime stage has its venv.
    $BUILDAH rmi --prune >/dev/null 2>&1 || true
    size=$($BUILDAH images --format '{{.Size}}' "$IMAGE")
else
    echo "neither a Docker engine nor buildah: install one (apt-get install -y buildah)" >&2
    exit 1
fi
echo "image $IMAGE: $size, built in $(( $(date +%s) - start ))s"

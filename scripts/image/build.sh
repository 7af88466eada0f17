#!/bin/sh
# Build the worker image with Docker where an engine answers, else with buildah (daemonless).
# Usage: scripts/image/build.sh        Env: IMAGE, VARIANT (cpu|gpu), TORCH_INDEX_URL (default:
#        PyTorch's index for the variant where it answers, else pip's configured index),
#        PYTHON_IMAGE (the base; with buildah, default a Debian-made one: scripts/image/base.sh),
#        BUILDAH (the buildah command, storage flags included).
# With buildah the host's pip configuration (`pip config list`: files and PIP_* variables), its
# CA bundle and the local wheel folders it names are mounted read-only into the build, as behind
# a corporate proxy; none of them lands in the image.
set -eu
cd "$(dirname "$0")/../.."
VARIANT=${VARIANT:-cpu}
BUILDAH=${BUILDAH:-buildah --storage-driver vfs}
start=$(date +%s)

# torch comes from PyTorch's index (the Dockerfile's default) when it answers, else from the
# package index pip is configured with here (PyPI by default): its Linux torch is the CUDA build.
if [ -z "${TORCH_INDEX_URL:-}" ] && ! python3 -c 'import urllib.request as u
u.urlopen("https://download.pytorch.org/whl/cpu/torch/", timeout=10)' >/dev/null 2>&1; then
    TORCH_INDEX_URL=${PIP_INDEX_URL:-$(python3 -m pip config get global.index-url 2>/dev/null || true)}
    TORCH_INDEX_URL=${TORCH_INDEX_URL:-https://pypi.org/simple}
    echo "download.pytorch.org is out of reach: torch from $TORCH_INDEX_URL"
fi

if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    IMAGE=${IMAGE:-posefleet-worker:$VARIANT}
    set -- --build-arg "VARIANT=$VARIANT"
    [ -n "${PYTHON_IMAGE:-}" ] && set -- "$@" --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE"
    [ -n "${TORCH_INDEX_URL:-}" ] && set -- "$@" --build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL"
    docker build "$@" -t "$IMAGE" .
    size=$(docker image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.2f GB", $1/1e9}')
elif command -v buildah >/dev/null 2>&1; then
    IMAGE=${IMAGE:-localhost/posefleet-worker:$VARIANT}
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
        --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" --build-arg "VARIANT=$VARIANT" \
        --build-arg "TORCH_INDEX_URL=${TORCH_INDEX_URL:-}" -t "$IMAGE" .
    # The build stage's image is not needed once the runtime stage has its venv.
    $BUILDAH rmi --prune >/dev/null 2>&1 || true
    size=$($BUILDAH images --format '{{.Size}}' "$IMAGE")
else
    echo "neither a Docker engine nor buildah: install one (apt-get install -y buildah)" >&2
    exit 1
fi
echo "image $IMAGE: $size, built in $(( $(date +%s) - start ))s"

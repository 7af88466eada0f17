#!/bin/sh
# Make a Debian bookworm base image with Python 3.11 from Debian's packages alone, for building
# the worker image where no container registry can be reached (buildah only, no Docker engine).
# Usage: scripts/image/base.sh [IMAGE]      (default localhost/posefleet-base:bookworm)
# The published image builds on the official python image instead (the Dockerfile's default).
# Env: BUILDAH (the buildah command, storage flags included), MIRROR (a Debian mirror; by default
# the first one this machine's apt sources name).
set -eu
IMAGE=${1:-localhost/posefleet-base:bookworm}
BUILDAH=${BUILDAH:-buildah --storage-driver vfs}

if $BUILDAH inspect --type image "$IMAGE" >/dev/null 2>&1; then
    echo "base image $IMAGE is already there"
    exit 0
fi
command -v debootstrap >/dev/null || {
    echo "debootstrap is missing: apt-get install -y debootstrap" >&2; exit 1; }

if [ -z "${MIRROR:-}" ]; then
    # deb822 sources (URIs: ...) or one-line sources (deb URL suite ...): take the first Debian one.
    MIRROR=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
        | sed -n -e 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' \
                 -e 's/^deb[[:space:]]\{1,\}\(\[[^]]*\][[:space:]]*\)\{0,1\}\([^[:space:]]*\).*/\2/p' \
        | grep -E '/debian/?$' | head -n 1)
    MIRROR=${MIRROR:-http://deb.debian.org/debian}
fi

ROOTFS=$(mktemp -d "${TMPDIR:-/tmp}/posefleet-base.XXXXXX")
ctr=
cleanup() {
    [ -n "$ctr" ] && $BUILDAH rm "$ctr" >/dev/null 2>&1 || true
    rm -rf "$ROOTFS"
}
trap cleanup EXIT

echo "debootstrap bookworm from $MIRROR"
# minbase: apt, dpkg, passwd (useradd), coreutils; plus Python 3.11 with venv and the CA bundle.
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$ROOTFS" "$MIRROR"
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* \
    "$ROOTFS"/var/log/*.log "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/*

ctr=$($BUILDAH from scratch)
mnt=$($BUILDAH mount "$ctr")
# tar keeps owners, modes and setuid bits as they are in the tree.
tar -C "$ROOTFS" -cf - . | tar -C "$mnt" -xpf - --numeric-owner
$BUILDAH umount "$ctr" >/dev/null
$BUILDAH config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd /bin/bash \
    --label "org.opencontainers.image.description=Debian bookworm minbase + python3 (local base)" \
    "$ctr"
$BUILDAH commit --rm "$ctr" "$IMAGE" >/dev/null
ctr=
echo "base image $IMAGE: $($BUILDAH images --format '{{.Size}}' "$IMAGE")"

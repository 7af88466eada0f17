#!/bin/sh
# Write requirements/<source>.lock: every package the worker image installs, pinned with the
# SHA-256 of each of its files, for the image's platform (linux x86_64, CPython 3.11, which this
# must run on). The Dockerfile installs from it with --require-hashes, so a file that differs
# from what was locked here fails the build. Usage: make lock   (or scripts/lock.sh [SOURCE...])
#   pypi   torch from PyPI: its Linux wheel is the CUDA build (nvidia-* wheels), CPU or GPU
#   cpu    torch from PyTorch's CPU index         (download.pytorch.org must answer)
#   cu126  torch from PyTorch's CUDA 12.6 index   (download.pytorch.org must answer)
# Env: PIP_COMPILE (default .venv/bin/pip-compile; pip-tools, in the dev extra).
set -eu
cd "$(dirname "$0")/.."
PIP_COMPILE=${PIP_COMPILE:-.venv/bin/pip-compile}
[ "$(uname -m)" = x86_64 ] || { echo "lock on linux x86_64: markers resolve for this machine" >&2; exit 1; }
python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
    || { echo "lock with CPython 3.11, the image's Python" >&2; exit 1; }
[ $# -gt 0 ] || set -- pypi cpu cu126
for source in "$@"; do
    case $source in
        pypi) index= ;;
        cpu | cu126) index=https://download.pytorch.org/whl/$source ;;
        *) echo "unknown torch source $source (pypi, cpu, cu126)" >&2; exit 1 ;;
    esac
    if [ -n "$index" ] && ! python3 -c 'import sys, urllib.request as u
u.urlopen(sys.argv[1] + "/torch/", timeout=10)' "$index" >/dev/null 2>&1; then
        echo "$index does not answer here: requirements/$source.lock left as it is"
        continue
    fi
    echo "locking requirements/$source.lock"
    $PIP_COMPILE --quiet --generate-hashes --allow-unsafe --strip-extras --newline=lf \
        --no-emit-index-url --no-emit-find-links --extra openvino \
        ${index:+--extra-index-url "$index"} --output-file "requirements/$source.lock" \
        pyproject.toml requirements/image.in
done

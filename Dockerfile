# posefleet worker image.
#   CPU and GPU:    docker build -t posefleet-worker .        (torch from PyPI, the CUDA build)
#   CPU only:       make lock && docker build --build-arg TORCH_SOURCE=cpu -t posefleet-worker:cpu .
#   Here (no registry, no Docker engine): make image (buildah, a Debian-made base; see
#   docs/deploy.md). Every package comes from a lock file with hashes (requirements/).
# The image carries CUDA's user-space libraries in torch's wheels; a GPU host (the ECS
# GPU-optimised AMI) brings the driver. Only what the worker needs goes in: no training data,
# no tests, no infra.

# The base, pinned by digest: python:3.11.15-slim-bookworm as docker-library/repo-info records it
# (repos/python/remote/3.11.15-slim-bookworm.md, the multi-platform index). A tag can be pushed
# again; a digest cannot. `make image` passes one made from Debian's packages where no registry
# can be reached (scripts/image/base.sh). Any Debian-like image with python3 and venv will do.
ARG PYTHON_IMAGE=python:3.11.15-slim-bookworm@sha256:d29f48a31a8b408ed19272ca1e7b10ebae13b240a27e862d3d4217c528e2e0c3

FROM ${PYTHON_IMAGE} AS build
# Where torch comes from, and so which lock: requirements/<TORCH_SOURCE>.lock (make lock).
# pypi: PyPI's Linux wheel, the CUDA build, for CPU and GPU alike (the only source whose hashes
# could be locked here); cpu or cu126: PyTorch's own indexes, once make lock has written their
# locks where download.pytorch.org answers (docs/security.md, "Supply chain").
ARG TORCH_SOURCE=pypi
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# python3: the official image and Debian's both have it; the venv then provides `python`.
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Every package from the lock, each file checked against its hash; wheels only, so no package's
# build script runs here. The lock first, so this layer is cached across code changes.
COPY requirements ./requirements
RUN lock="requirements/${TORCH_SOURCE}.lock"; \
    if [ ! -f "$lock" ]; then \
      echo "no $lock: run make lock where its index answers (docs/security.md)" >&2; exit 1; fi; \
    set --; if [ "$TORCH_SOURCE" != pypi ]; then \
      set -- --extra-index-url "https://download.pytorch.org/whl/$TORCH_SOURCE"; fi; \
    pip install --no-cache-dir --require-hashes --only-binary=:all: "$@" -r "$lock"
COPY pyproject.toml README.md ./
COPY posefleet ./posefleet
COPY mappings ./mappings
COPY worker ./worker
COPY producer ./producer
# The project itself: no dependency resolved, no index asked, the locked setuptools builds it.
RUN pip install --no-cache-dir --no-deps --no-index --no-build-isolation .

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    POSEFLEET_MODEL_CACHE_DIR=/home/posefleet/models
RUN groupadd --system --gid 10001 posefleet \
 && useradd --system --uid 10001 --gid posefleet --create-home posefleet \
 && install -d -o 10001 -g 10001 -m 0700 /home/posefleet/models
COPY --from=build /opt/venv /opt/venv
# The worker runs on a read-only root (the task definition's readonlyRootFilesystem) and writes
# only here: the model cache and /tmp. ECS mounts a volume at each path the task definition's
# mountPoints name and, because the image declares it here, copies the image's directory into it
# with its owner and mode (uid 10001, 0700; /tmp 1777).
VOLUME ["/tmp", "/home/posefleet/models"]
USER 10001:10001
WORKDIR /home/posefleet
# Exec form: the worker is PID 1 and receives ECS's SIGTERM itself, then drains.
ENTRYPOINT ["python", "-m", "worker"]

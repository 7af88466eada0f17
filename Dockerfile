# posefleet worker image.
#   CPU (default):  docker build -t posefleet-worker .
#   GPU (CUDA):     docker build --build-arg VARIANT=gpu -t posefleet-worker:gpu .
#   Here (no registry, no Docker engine): make image (buildah, a Debian-made base, PyPI's torch;
#   see docs/deploy.md).
# The GPU image carries CUDA's user-space libraries in torch's wheels; the host (the ECS
# GPU-optimised AMI) brings the driver. Only what the worker needs goes in: no training data,
# no tests, no infra.

# The base: any Debian-like image with python3 and its venv module (the official one by default;
# `make image` passes one made from Debian's packages where no registry can be reached).
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG VARIANT=cpu
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
ARG OPENVINO_VERSION=2026.4.1
# Where torch comes from; empty means PyTorch's index for the variant (cpu or cu126). PyPI's
# Linux wheel (https://pypi.org/simple) is the CUDA build with its nvidia-* wheels: it runs on
# CPU too, in a much larger image (docs/deploy.md has the sizes).
ARG TORCH_INDEX_URL=
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# python3: the official image and Debian's both have it; the venv then provides `python`.
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, from PyTorch's index for the variant, so the layer is cached across code changes.
RUN index="$TORCH_INDEX_URL"; \
    if [ -z "$index" ] && [ "$VARIANT" = "gpu" ]; then index=https://download.pytorch.org/whl/cu126; \
    elif [ -z "$index" ]; then index=https://download.pytorch.org/whl/cpu; fi \
 && pip install --no-cache-dir --index-url "$index" \
      "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY posefleet ./posefleet
COPY mappings ./mappings
COPY worker ./worker
COPY producer ./producer
# The CPU image can serve the OpenVINO backends (fp32 and the int8 model beside a checkpoint).
RUN if [ "$VARIANT" = "gpu" ]; then pip install --no-cache-dir .; \
    else pip install --no-cache-dir . "openvino==${OPENVINO_VERSION}"; fi

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    POSEFLEET_MODEL_CACHE_DIR=/home/posefleet/models
RUN groupadd --system --gid 10001 posefleet \
 && useradd --system --uid 10001 --gid posefleet --create-home posefleet
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
WORKDIR /home/posefleet
# Exec form: the worker is PID 1 and receives ECS's SIGTERM itself, then drains.
ENTRYPOINT ["python", "-m", "worker"]

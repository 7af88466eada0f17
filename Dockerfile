# posefleet worker image.
#   CPU (default):  docker build -t posefleet-worker .
#   GPU (CUDA):     docker build --build-arg VARIANT=gpu -t posefleet-worker:gpu .
# The GPU image carries CUDA's user-space libraries in torch's wheels; the host (the ECS
# GPU-optimised AMI) brings the driver. Only what the worker needs goes in: no training data,
# no tests, no infra.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG VARIANT=cpu
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
ARG OPENVINO_VERSION=2026.4.1
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, from PyTorch's index for the variant, so the layer is cached across code changes.
RUN if [ "$VARIANT" = "gpu" ]; then index=https://download.pytorch.org/whl/cu126; \
    else index=https://download.pytorch.org/whl/cpu; fi \
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

# syntax=docker/dockerfile:1
# The edge agent (vehicle role: no torch, no centre libraries) on a CUDA + cuDNN + TensorRT
# runtime, non-root, with the daemon's own health check. docs/operations.md, "Containers".
#
# x86_64 (CUDA 13, cuDNN 9 and TensorRT 10, what onnxruntime-gpu 1.31 from uv.lock loads):
#   docker build -f deploy/containers/edge-agent.Dockerfile -t fleetal/edge-agent:0.1.0 .
# Jetson / Orin (arm64): PyPI has no CUDA build of onnxruntime-gpu for aarch64; build on the
# JetPack base and give the wheel NVIDIA's Jetson index publishes for that JetPack:
#   docker build -f deploy/containers/edge-agent.Dockerfile \
#     --build-arg BASE=nvcr.io/nvidia/l4t-jetpack:r36.4.0 --build-arg TENSORRT_FROM_APT=0 \
#     --build-arg ORT_WHEEL=https://.../onnxruntime_gpu-1.23.0-cp311-cp311-linux_aarch64.whl .
# Run: docker run --gpus all -v /etc/fleetal:/etc/fleetal:ro -v fleetal-data:/var/lib/fleetal ...
ARG BASE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.8

FROM ${UV_IMAGE} AS uv

FROM ${BASE} AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy
WORKDIR /src
# the pinned requirements of the vehicle role, from the lock file: a layer that changes only
# with uv.lock
COPY pyproject.toml uv.lock README.md ./
ARG ORT_WHEEL=""
RUN uv python install 3.11.7 \
 && uv venv --python 3.11.7 /opt/fleetal/venv \
 && uv export --locked --no-dev --no-emit-project --no-header --format requirements-txt \
      --output-file /tmp/vehicle.txt \
 && uv pip sync --python /opt/fleetal/venv/bin/python /tmp/vehicle.txt \
 && if [ -n "${ORT_WHEEL}" ]; then \
      uv pip install --python /opt/fleetal/venv/bin/python --no-deps --reinstall "${ORT_WHEEL}"; \
    fi
COPY edge_agent/ edge_agent/
COPY schemas/ schemas/
COPY selector/ selector/
RUN uv pip install --python /opt/fleetal/venv/bin/python --no-deps .

FROM ${BASE}
# TensorRT's runtime libraries for onnxruntime's TensorRT provider (from the CUDA repository the
# base image configures; pinned: they must match the base's CUDA), and the shared libraries
# open3d's wheel links (libEGL, libGL, libX11, libudev; libusb for `import open3d`). Those come
# from the base's own distribution release, which the base image's tag fixes; exact versions
# would break the build at the distribution's next security update, and differ between the
# x86_64 (Ubuntu 24.04) and JetPack (Ubuntu 22.04) bases.
ARG TENSORRT_FROM_APT=1
ARG TENSORRT_VERSION=10.13.3.9-1+cuda13.0
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libusb-1.0-0 libegl1 libgl1 libx11-6 libudev1 \
 && if [ "${TENSORRT_FROM_APT}" = "1" ]; then \
      apt-get install -y --no-install-recommends \
        "libnvinfer10=${TENSORRT_VERSION}" \
        "libnvinfer-plugin10=${TENSORRT_VERSION}" \
        "libnvonnxparsers10=${TENSORRT_VERSION}"; \
    fi \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 fleetal \
 && useradd --system --uid 10001 --gid fleetal --home-dir /var/lib/fleetal \
      --shell /usr/sbin/nologin fleetal \
 && install -d -o fleetal -g fleetal -m 0750 /var/lib/fleetal \
 && install -d -m 0755 /etc/fleetal
COPY --from=build /opt/python /opt/python
COPY --from=build /opt/fleetal/venv /opt/fleetal/venv
ENV PATH=/opt/fleetal/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    FLEETAL_AGENT__DATA_DIR=/var/lib/fleetal \
    FLEETAL_METRICS__HOST=0.0.0.0
USER 10001:10001
WORKDIR /var/lib/fleetal
VOLUME ["/var/lib/fleetal"]
# /metrics and /healthz
EXPOSE 9464
# `edge-agent check` asks the running daemon's /healthz: 0 healthy, 1 unhealthy
HEALTHCHECK --interval=30s --timeout=15s --start-period=180s --retries=3 \
  CMD ["edge-agent", "check", "--config", "/etc/fleetal/agent.toml"]
ENTRYPOINT ["edge-agent"]
CMD ["run", "--config", "/etc/fleetal/agent.toml"]

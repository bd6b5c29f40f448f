# syntax=docker/dockerfile:1
# The facehpo image: worker, coordinator (init / fine / final) and optuna-dashboard.
# Its command is the CLI itself: `docker run IMAGE worker --study NAME-coarse`.
#
#   GPU (default): python:3.11-slim + TensorFlow's CUDA wheels (the `gpu` extra); the host
#                  needs only the NVIDIA driver and the NVIDIA Container Toolkit.
#   CPU:           docker build --build-arg EXTRAS= -t facehpo:cpu .
#   Other base:    --build-arg BASE=...  (any Debian/Ubuntu image with python3.11 and pip)
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

ARG EXTRAS=gpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=1

# An unprivileged user; /data (crop files) and /out (final outputs, artifacts) belong to it,
# so named volumes mounted there start out writable by it.
RUN useradd --create-home --uid 10001 --user-group --shell /usr/sbin/nologin facehpo \
 && mkdir -p /data /out \
 && chown facehpo:facehpo /data /out

WORKDIR /opt/facehpo
# Dependencies first, in their own layer: source edits do not reinstall TensorFlow.
COPY pyproject.toml README.md ./
RUN mkdir dataset model study \
 && touch dataset/__init__.py model/__init__.py study/__init__.py \
 && pip install ".${EXTRAS:+[$EXTRAS]}" \
 && pip uninstall -y facehpo \
 && rm -rf dataset model study build *.egg-info
COPY dataset ./dataset
COPY model ./model
COPY study ./study
RUN pip install --no-deps . && rm -rf build *.egg-info

USER facehpo
WORKDIR /home/facehpo
ENTRYPOINT ["facehpo"]
CMD ["--help"]

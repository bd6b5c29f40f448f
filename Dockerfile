# The facehpo image: worker, coordinator (init / fine / final) and optuna-dashboard.
# Its command is the CLI itself: `docker run IMAGE worker --study NAME-coarse`.
# Build it with BuildKit (`docker compose build`, or `docker build` with buildx): the pip
# cache mount below keeps downloaded wheels between builds.
#
#   GPU (default): python:3.11-slim + TensorFlow's CUDA wheels (the `gpu` extra); the host
#                  needs only the NVIDIA driver and the NVIDIA Container Toolkit.
#   CPU:           docker build --build-arg EXTRAS=cpu -t facehpo:cpu .
#                  `cpu` is no pyproject extra: it swaps `tensorflow` for TensorFlow's
#                  CPU-only build, `tensorflow-cpu` (smaller, and no CUDA start-up errors).
#   More extras:   a comma list, e.g. --build-arg EXTRAS=gpu,gp (GPSampler's PyTorch)
#   Other base:    --build-arg BASE=...  (any Debian/Ubuntu image with python3.11 and pip)
ARG BASE=python:3.11-slim-bookworm

# What to install: the project's requirements plus those of EXTRAS, read from pyproject.toml.
# A stage of its own, so that editing pyproject.toml elsewhere (test extras, tool settings)
# leaves the dependency layer below cached: it changes only when this list does.
FROM ${BASE} AS requirements
ARG EXTRAS=gpu
COPY pyproject.toml /tmp/
RUN python3 -c 'import sys, tomllib; \
p = tomllib.load(open("/tmp/pyproject.toml", "rb"))["project"]; \
extras = [e for e in sys.argv[1].split(",") if e]; \
reqs = [("tensorflow-cpu" + r[len("tensorflow"):] if "cpu" in extras else r) \
        if r.startswith("tensorflow>") else r for r in p["dependencies"]]; \
reqs += [r for e in extras if e != "cpu" for r in p["optional-dependencies"][e]]; \
print("\n".join(reqs))' "$EXTRAS" > /tmp/requirements.txt

FROM ${BASE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    TF_CPP_MIN_LOG_LEVEL=1

# An unprivileged user; /data (crop files) and /out (final outputs, artifacts) belong to it,
# so named volumes mounted there start out writable by it.
RUN useradd --create-home --uid 10001 --user-group --shell /usr/sbin/nologin facehpo \
 && mkdir -p /data /out \
 && chown facehpo:facehpo /data /out

WORKDIR /opt/facehpo
# Dependencies first, in their own layer: source edits do not reinstall TensorFlow.
COPY --from=requirements /tmp/requirements.txt /tmp/
RUN --mount=type=cache,target=/root/.cache/pip pip install -r /tmp/requirements.txt
COPY pyproject.toml README.md ./
COPY dataset ./dataset
COPY model ./model
COPY study ./study
RUN --mount=type=cache,target=/root/.cache/pip pip install --no-deps . && rm -rf build *.egg-info

USER facehpo
WORKDIR /home/facehpo
ENTRYPOINT ["facehpo"]
CMD ["--help"]

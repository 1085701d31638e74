# gpulse agent image: `docker build -t gpulse .`, then
#   docker run --rm --gpus all --pid host -p 10835:10835 gpulse            (a GPU node)
#   docker run --rm -p 10835:10835 gpulse demo --listen 0.0.0.0:10835       (the simulated fleet)
# Python base pinned to an exact version; pin the digest too in your registry mirror.
ARG PYTHON_IMAGE=python:3.11.9-slim-bookworm

# --- build: wheels for gpulse and its dependencies ------------------------------------------
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY pyproject.toml README.md ./
COPY agent ./agent
COPY exporters ./exporters
RUN pip wheel --wheel-dir /wheels .

# --- runtime: the wheels installed, no build tools, no source ------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="gpulse" \
      org.opencontainers.image.description="GPU/CPU telemetry and profiling agent" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=utility
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels /wheels/gpulse-*.whl \
    && groupadd --system --gid 10001 gpulse \
    && useradd --system --uid 10001 --gid gpulse --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin gpulse
USER 10001:10001
EXPOSE 10835
# /healthz is 200 while the sampling loop ticks (the slim image has no curl).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:10835/healthz', timeout=4).status != 200)"]
ENTRYPOINT ["gpulse"]
CMD ["serve"]

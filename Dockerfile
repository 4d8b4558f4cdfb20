# syntax=docker/dockerfile:1
#
# tencentcloud-task-exporter container image.
#
#   docker build -t tencentcloud-task-exporter .
#   docker run --rm -p 10123:10123 tencentcloud-task-exporter --demo        # simulator, no credentials
#   docker run --rm -p 10123:10123 \
#     -e TENCENTCLOUD_SECRET_ID -e TENCENTCLOUD_SECRET_KEY \
#     -v "$PWD/config.yaml:/etc/tencentcloud-task-exporter/config.yaml:ro" tencentcloud-task-exporter
#
# Configuration: mount the config file at /etc/tencentcloud-task-exporter/config.yaml (the default CMD
# points there; flags given to `docker run` replace the CMD, so repeat --config.file then). Pass the API keys as
# environment variables (TENCENTCLOUD_SECRET_ID, TENCENTCLOUD_SECRET_KEY, optionally
# TENCENTCLOUD_SESSION_TOKEN) rather than writing them into the file; never bake them into the image.
# Port: 10123 (/metrics, /-/healthy, /-/ready). The HEALTHCHECK assumes that port.

ARG PYTHON_IMAGE=python:3.12.8-slim-bookworm

# --- build: install the package and its runtime dependencies into a venv without pip ---------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
RUN python -m venv --without-pip /opt/exporter

COPY pyproject.toml README.md ./
COPY exporter ./exporter

# The build backend (setuptools) lives in pip's isolated build environment; only the exporter and its
# runtime dependencies (aiohttp, prometheus-client, pyyaml) end up in /opt/exporter.
RUN pip --python /opt/exporter/bin/python install .

# --- runtime ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="tencentcloud-task-exporter" \
      org.opencontainers.image.description="Prometheus exporter for Tencent Cloud database async operations" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --system --gid 10001 exporter \
    && useradd --system --uid 10001 --gid exporter --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin exporter \
    && mkdir -p /etc/tencentcloud-task-exporter /var/lib/tencentcloud-task-exporter \
    && chown exporter:exporter /var/lib/tencentcloud-task-exporter

COPY --from=build /opt/exporter /opt/exporter

ENV PATH=/opt/exporter/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# The working directory is the writable state directory: the store (registered tasks, status first-seen
# times) is data/tencentcloud-task-exporter.db below it (the default --storage.path). Mount a volume here.
WORKDIR /var/lib/tencentcloud-task-exporter
VOLUME /var/lib/tencentcloud-task-exporter
USER 10001:10001

EXPOSE 10123

HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:10123/-/healthy', timeout=4).status != 200)"]

ENTRYPOINT ["tencentcloud-task-exporter"]
CMD ["--config.file=/etc/tencentcloud-task-exporter/config.yaml"]

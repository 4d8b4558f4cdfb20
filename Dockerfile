# syntax=docker/dockerfile:1
#
# tencentcloud-task-exporter container image.
#
#   docker build \
#     --build-arg REVISION="$(git rev-parse HEAD)" \
#     --build-arg BRANCH="$(git rev-parse --abbrev-ref HEAD)" \
#     --build-arg BUILD_DATE="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
#     --build-arg BUILD_USER="$(id -un)@$(hostname)" \
#     -t tencentcloud-task-exporter:0.2.0 .
#   docker run --rm -p 10123:10123 tencentcloud-task-exporter:0.2.0 --demo    # simulator, no credentials
#   docker run --rm -p 10123:10123 \
#     -e TENCENTCLOUD_SECRET_ID -e TENCENTCLOUD_SECRET_KEY \
#     -v "$PWD/config.yaml:/etc/tencentcloud-task-exporter/config.yaml:ro" tencentcloud-task-exporter:0.2.0
#
# Build arguments (all optional; what they default to is printed as "unknown" by --version):
#   REVISION    the commit built (40 hex digits): build_info{revision}, --version, OCI label revision
#   BRANCH      its branch: build_info{branch}, --version
#   BUILD_DATE  RFC 3339, UTC (2026-11-23T10:00:00Z): OCI label created; --version shows 20261123-10:00:00
#   BUILD_USER  user@host: --version
#   VERSION     must equal exporter/__init__.py's __version__ (the build fails otherwise): OCI label version
#
# Configuration: mount the config file at /etc/tencentcloud-task-exporter/config.yaml (the default CMD
# points there; flags given to `docker run` replace the CMD, so repeat --config.file then). Pass the API keys as
# environment variables (TENCENTCLOUD_SECRET_ID, TENCENTCLOUD_SECRET_KEY, optionally
# TENCENTCLOUD_SESSION_TOKEN) rather than writing them into the file; never bake them into the image.
# Port: 10123 (/metrics, /-/healthy, /-/ready).
#
# Health: `tencentcloud-task-exporter healthcheck` GETs /-/healthy. A HEALTHCHECK cannot see the flags given to
# `docker run`, so the daemon writes where it listens (and its --web.config.file, for TLS) to
# $TENCENTCLOUD_EXPORTER_HEALTHCHECK_FILE and the check reads it: any --web.listen-address and TLS work.
# With basic_auth_users in the web config, give the check credentials: -e TENCENTCLOUD_EXPORTER_HEALTHCHECK_AUTH
# (user:password).

# Python 3.11, the version the tests run on and requirements.lock was compiled for. The digest is the
# multi-platform index of python:3.11.16-slim-bookworm as docker-library/repo-info records it
# (repos/python/remote/3.11.16-slim-bookworm.md); refresh both together.
ARG PYTHON_IMAGE=python:3.11.16-slim-bookworm@sha256:c425d915a89a6dcd3183b1797ad9bd8878caff5a417f6371c8df93c8ea8b727f

# --- build: install the locked runtime dependencies and the package into a venv without pip --------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
RUN python -m venv --without-pip /opt/exporter

# Exactly the versions the tests ran, each checked against its hash; nothing resolved at build time.
COPY requirements.lock ./
RUN pip --python /opt/exporter/bin/python install --require-hashes --no-deps -r requirements.lock

COPY pyproject.toml README.md ./
COPY exporter ./exporter

# The package alone (--no-deps: its dependencies are the locked ones above), built into a wheel by the
# base image's own setuptools, so nothing unpinned is downloaded.
RUN pip wheel --no-deps --no-build-isolation --wheel-dir /tmp/wheels . \
    && pip --python /opt/exporter/bin/python install --no-deps /tmp/wheels/*.whl \
    && pip --python /opt/exporter/bin/python check

# Last, so a new commit rebuilds only this layer: exporter/_build_info.json beside the installed package,
# which --version and tencentcloud_exporter_build_info read.
ARG VERSION=0.2.0
ARG REVISION=unknown
ARG BRANCH=unknown
ARG BUILD_DATE=unknown
ARG BUILD_USER=unknown
RUN /opt/exporter/bin/python -m exporter.buildinfo

# --- runtime ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}

ARG VERSION=0.2.0
ARG REVISION=unknown
ARG BUILD_DATE=unknown
LABEL org.opencontainers.image.title="tencentcloud-task-exporter" \
      org.opencontainers.image.description="Prometheus exporter for Tencent Cloud async operations" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/tencentcloud-task-exporter/tencentcloud-task-exporter" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${BUILD_DATE}"

RUN groupadd --system --gid 10001 exporter \
    && useradd --system --uid 10001 --gid exporter --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin exporter \
    && mkdir -p /etc/tencentcloud-task-exporter /var/lib/tencentcloud-task-exporter \
    && chown exporter:exporter /var/lib/tencentcloud-task-exporter

COPY --from=build /opt/exporter /opt/exporter

ENV PATH=/opt/exporter/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TENCENTCLOUD_EXPORTER_HEALTHCHECK_FILE=/var/lib/tencentcloud-task-exporter/.healthcheck.json

# The working directory is the writable state directory: the store (registered tasks, status first-seen
# times) is data/tencentcloud-task-exporter.db below it (the default --storage.path), and the healthcheck file
# is kept there too (writable even with a read-only root filesystem). Mount a volume here.
WORKDIR /var/lib/tencentcloud-task-exporter
VOLUME /var/lib/tencentcloud-task-exporter
USER 10001:10001

EXPOSE 10123

HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["tencentcloud-task-exporter", "healthcheck"]

ENTRYPOINT ["tencentcloud-task-exporter"]
CMD ["--config.file=/etc/tencentcloud-task-exporter/config.yaml"]

# The pharmacy-model server image. One image, several commands:
#   (default)                 gunicorn serving the model built into the image, on :8080
#   pharmacy-gemini-stub      the Gemini-compatible stub (set STUB_HOST=0.0.0.0)
#   pharmacy-build-model      build/register the model (--register with MLFLOW_TRACKING_URI)
# Build: docker build -t pharmacy-model .   (scripts/with-docker.sh provides an engine here)
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# Dependencies first (their layer is reused while only the code changes): every file pinned
# and checked against its hash.
COPY requirements/runtime.txt /src/requirements/runtime.txt
RUN pip install --require-hashes --no-deps --only-binary=:all: -r /src/requirements/runtime.txt
COPY modelhub_sdk /src/modelhub_sdk
COPY service /src/service
# --no-deps: everything they need is above, hashed (a package of the SDK's name on a public
# index must never be picked up in its place).
RUN pip install --no-deps --no-build-isolation /src/modelhub_sdk /src/service \
 && pharmacy-build-model --output /opt/pharmacy-model \
 && python -m compileall -q /opt/pharmacy-model

# The optional MLflow tracking server (compose profile `registry`): the same venv plus what
# `mlflow server` needs, pinned and hashed like the rest.
FROM builder AS registry-builder
COPY requirements/registry.txt /src/requirements/registry.txt
RUN pip install --require-hashes --no-deps --only-binary=:all: -r /src/requirements/registry.txt

FROM ${PYTHON_IMAGE} AS runtime-base
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    LOGNAME=pharmacy \
    MLFLOW_DISABLE_TELEMETRY=true \
    HOST=0.0.0.0 \
    PORT=8080 \
    PHARMACY_MODEL_URI=/opt/pharmacy-model \
    PHARMACY_LOG_FORMAT=json \
    PROMETHEUS_MULTIPROC_DIR=/run/prometheus
# LOGNAME: uid 10001 has no passwd entry; MLflow's traces ask for a user name (getpass reads it).
# MLFLOW_DISABLE_TELEMETRY: no usage events from these processes to MLflow's servers.
# Code and model stay owned by root (read-only to the server); the only writable paths are /tmp
# and the metrics directory (mount tmpfs/emptyDir on both with a read-only root filesystem).
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /opt/pharmacy-model /opt/pharmacy-model
RUN mkdir -p /run/prometheus && chown 10001:10001 /run/prometheus
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 CMD ["pharmacy-healthcheck"]
CMD ["gunicorn", "-c", "python:pharmacy_service.server.gunicorn_conf"]

# docker build --target registry: an MLflow tracking server with its store in /mlflow (a volume).
FROM runtime-base AS registry
COPY --from=registry-builder /opt/venv /opt/venv
USER 0:0
RUN mkdir -p /mlflow && chown 10001:10001 /mlflow
USER 10001:10001
ENV MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
EXPOSE 5000
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD ["pharmacy-healthcheck", "http://127.0.0.1:5000/health"]
# env -u: mlflow's own metrics stay in process (the multiprocess directory is the model server's)
CMD ["env", "-u", "PROMETHEUS_MULTIPROC_DIR", "mlflow", "server", "--host", "0.0.0.0", "--port", "5000", "--workers", "1", \
     "--backend-store-uri", "sqlite:////mlflow/mlflow.db", "--artifacts-destination", "/mlflow/artifacts"]

# The default target: the model server.
FROM runtime-base AS runtime

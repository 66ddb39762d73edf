# syntax=docker/dockerfile:1
# The centre's ingest service (consumer, labeling API, retrain scheduler and trainer, MLflow
# registry client, rollout): the `centre` extra from uv.lock, non-root, with a health check on
# /healthz. docs/operations.md, "Containers".
#   docker build -f deploy/containers/ingest-service.Dockerfile -t fleetal/ingest-service:0.1.0 .
# Run: docker run -v /etc/fleetal:/etc/fleetal:ro -v fleetal-ingest:/var/lib/fleetal-ingest \
#        -p 8080:8080 -p 9465:9465 fleetal/ingest-service:0.1.0
ARG BASE=python:3.11.14-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.8

FROM ${UV_IMAGE} AS uv

FROM ${BASE} AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
RUN uv venv --python /usr/local/bin/python3.11 /opt/fleetal/venv \
 && uv export --locked --no-dev --no-emit-project --no-header --extra centre \
      --format requirements-txt --output-file /tmp/centre.txt \
 && uv pip sync --python /opt/fleetal/venv/bin/python /tmp/centre.txt
COPY edge_agent/ edge_agent/
COPY schemas/ schemas/
COPY selector/ selector/
COPY ingest_service/ ingest_service/
RUN uv pip install --python /opt/fleetal/venv/bin/python --no-deps .

FROM ${BASE}
RUN groupadd --system --gid 10001 fleetal \
 && useradd --system --uid 10001 --gid fleetal --home-dir /var/lib/fleetal-ingest \
      --shell /usr/sbin/nologin fleetal \
 && install -d -o fleetal -g fleetal -m 0750 /var/lib/fleetal-ingest \
 && install -d -m 0755 /etc/fleetal
COPY --from=build /opt/fleetal/venv /opt/fleetal/venv
# reachable from outside the container (the defaults bind loopback)
ENV PATH=/opt/fleetal/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    FLEETAL_API__HOST=0.0.0.0 \
    FLEETAL_METRICS__HOST=0.0.0.0
USER 10001:10001
WORKDIR /var/lib/fleetal-ingest
VOLUME ["/var/lib/fleetal-ingest"]
# labeling API, /metrics and /healthz
EXPOSE 8080 9465
# /healthz on the ops port: 200 when the consumer, the queue and the blob store are up
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9465/healthz', timeout=5).status != 200)"]
ENTRYPOINT ["ingest-service"]
CMD ["run", "--config", "/etc/fleetal/ingest.toml"]

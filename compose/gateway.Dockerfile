# syntax=docker/dockerfile:1
# The gateway's production image: slim, non-root, production dependencies only.
# Build context: the repository root (docker-compose.yml sets it), so from compose/:
#   docker compose build gateway
# or from the repository root:
#   docker build -f compose/gateway.Dockerfile -t pika-gateway .
# gateway.Dockerfile.dockerignore (next to this file) keeps the context to what is copied below.
# Pin the base by digest for reproducible builds (runbook, "Images"):
#   --build-arg PYTHON_IMAGE=python:3.11.17-slim@sha256:<digest>
ARG PYTHON_IMAGE=python:3.11.17-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY compose/gateway-requirements.lock ./
COPY gateway/ gateway/
COPY backends/ backends/
# Extras: one per backend kind that needs one, so the image serves every kind
# (`trtllm-serve`: tokenizer and chat template for its model_dir; `trtllm-grpc`: its generated
# stubs; `triton`: Triton's gRPC client), and `records-postgres` (shadow pairs in PostgreSQL,
# for several replicas). Never the engines or the test tools. Every dependency version comes
# from the lock, so two builds of one commit install the same packages.
ARG GATEWAY_EXTRAS=trtllm-serve,trtllm-grpc,triton,records-postgres
RUN python -m venv /opt/gateway \
    && /opt/gateway/bin/pip install --no-cache-dir \
        --constraint gateway-requirements.lock ".[${GATEWAY_EXTRAS}]"

FROM ${PYTHON_IMAGE}
# Shadow pairs default to SQLite in /var/lib/pika-gateway (mount a volume there to keep them);
# the compose stack sets GATEWAY_RECORDS_URL to its PostgreSQL instead.
ENV PATH=/opt/gateway/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GATEWAY_TASKS_DIR=/app/prompts \
    GATEWAY_RECORDS_URL=sqlite:////var/lib/pika-gateway/shadow.db
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin gateway \
    && install -d -o gateway -g gateway -m 0750 /var/lib/pika-gateway
COPY --from=build /opt/gateway /opt/gateway
COPY prompts/ /app/prompts/
COPY --chmod=0755 compose/gateway-entrypoint.sh /usr/local/bin/gateway-entrypoint
WORKDIR /app
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=4s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; \
port = os.environ.get('GATEWAY_PORT', '8080'); \
u.urlopen(f'http://127.0.0.1:{port}/ready', timeout=3)"]
ENTRYPOINT ["/usr/local/bin/gateway-entrypoint"]

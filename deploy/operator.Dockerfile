# kubetune operator image. Build from the repository root:
#   docker build -f deploy/operator.Dockerfile -t ghcr.io/kubetune/kubetune-operator:0.1.0 .
# Slim Python, only the `operator` extra (kopf, kubernetes client, prometheus-client: no torch), non-root, and
# nothing written at run time, so it runs with readOnlyRootFilesystem. Entry point: `kubetune operator` (kopf).

FROM python:3.12-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/kubetune
COPY pyproject.toml README.md ./
COPY operator/ operator/
# The distribution's package finder also looks in the image folders; the operator image needs none of them.
RUN mkdir -p trainer-image server-image \
    && /opt/kubetune/bin/pip install --no-compile ".[operator]" \
    && /opt/kubetune/bin/python -m compileall -q /opt/kubetune

FROM python:3.12-slim-bookworm
LABEL org.opencontainers.image.title="kubetune-operator" \
      org.opencontainers.image.description="Kubernetes operator for LoRA/QLoRA fine-tuning and serving of open LLMs" \
      org.opencontainers.image.source="https://github.com/kubetune/kubetune" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/kubetune/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/kubetune /opt/kubetune
# 65532: the conventional "nonroot" uid; the Deployment also sets runAsUser/runAsNonRoot.
USER 65532:65532
WORKDIR /tmp
# 8080: Prometheus metrics, 8081: kopf liveness (/healthz). Settings come from KUBETUNE_* variables.
EXPOSE 8080 8081
ENTRYPOINT ["kubetune", "operator"]

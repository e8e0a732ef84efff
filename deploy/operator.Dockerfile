# kubetune operator image. Build from the repository root (tag: `make version`):
#   docker build -f deploy/operator.Dockerfile -t ghcr.io/kubetune/kubetune-operator:<version> .
# Python 3.11 on Debian bookworm (BASE: the tests build on a local Debian bookworm base, tests/images), only the
# `operator` extra (kopf, kubernetes client, prometheus-client: no torch), non-root, and nothing written at run
# time, so it runs with readOnlyRootFilesystem (tests/images runs it so). Entry point: `kubetune operator` (kopf).
# Built for linux/amd64 and linux/arm64 (pure Python on top of the base).

ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}
LABEL org.opencontainers.image.title="kubetune-operator" \
      org.opencontainers.image.description="Kubernetes operator for LoRA/QLoRA fine-tuning and serving of open LLMs" \
      org.opencontainers.image.source="https://github.com/kubetune/kubetune" \
      org.opencontainers.image.licenses="Apache-2.0"
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG PIP_EXTRA_INDEX_URL=
ARG PIP_FIND_LINKS=
# USER names the process's user for getpass.getuser() (kopf's peering identity) also under an arbitrary UID without
# an /etc/passwd entry, as OpenShift's restricted-v2 assigns.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/kubetune/bin:$PATH \
    USER=kubetune
WORKDIR /opt/kubetune/src
# The dependencies (pyproject.toml) in their own layer, then the code; bytecode compiled at build time, as
# nothing can write it at run time.
COPY pyproject.toml ./
# The user exists in /etc/passwd: kopf names its peering identity after it (getpass.getuser() fails for a uid
# without an entry, so an image whose USER is a bare number cannot start with peering).
RUN python3 -m venv /opt/kubetune \
    && groupadd --gid 65532 kubetune \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin kubetune \
    && python3 -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(['setuptools>=68', *p['dependencies'], *p['optional-dependencies']['operator']]))" > /tmp/requirements.txt \
    && pip install --no-compile -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt
COPY README.md ./
COPY operator/kubetune/ operator/kubetune/
# The distribution's package finder also looks in the image folders; the operator image needs none of them.
RUN mkdir -p trainer-image server-image \
    && pip install --no-compile --no-deps --no-build-isolation . \
    && rm -rf build ./*.egg-info \
    && python3 -m compileall -q /opt/kubetune/lib \
    && kubetune --version
# 65532: the conventional "nonroot" uid, numeric so the kubelet can check the Deployment's runAsNonRoot. The
# Deployment sets no runAsUser: OpenShift's restricted-v2 assigns a UID of its own (USER/passwd cover any UID).
USER 65532:65532
WORKDIR /tmp
# 8080: Prometheus metrics, 8081: kopf liveness (/healthz). Settings come from KUBETUNE_* variables.
EXPOSE 8080 8081
ENTRYPOINT ["kubetune", "operator"]

"""kubetune: self-service LLM fine-tuning and serving on Kubernetes."""

# The one version of kubetune. The Python distribution reads it (pyproject.toml, dynamic version); `kubetune
# --version`, the operator's default image tags and its user agent import it; the Helm chart, the kustomize base and
# the image tags are stamped from it by `make set-version VERSION=x.y.z` (tools/version.py), and
# tests/deploy/test_version.py fails when any of them disagrees. docs/releasing.md: how a release is made.
__version__ = "0.1.0"

"""Pinning the released images by digest: the chart's `image.digest` values, and tools/pin_digests.py, which the
release workflow runs on the packaged chart's values and on the kustomize-built install.yaml."""

from __future__ import annotations

import kubetune
import pytest
import yaml

from tools import pin_digests

from . import render

VERSION = kubetune.__version__
DIGESTS = {name: "sha256:" + letter * 64 for name, letter in zip(pin_digests.IMAGES, "abc", strict=True)}


PINNED = {name: f"ghcr.io/kubetune/kubetune-{name}:{VERSION}@{DIGESTS[name]}" for name in pin_digests.IMAGES}


def test_by_default_the_chart_pulls_by_tag(helm_default):
    assert not any("@" in image for image in render.operator_images(helm_default).values())


def test_chart_digest_values_pin_every_image():
    values = {name: {"image": {"digest": digest}} for name, digest in DIGESTS.items()}
    assert render.operator_images(render.helm_template(values, include_crds=False)) == PINNED


def test_the_chart_refuses_a_digest_that_is_not_one():
    with pytest.raises(render.RenderError, match="digest"):
        render.helm_template({"trainer": {"image": {"digest": "latest"}}}, include_crds=False)


def test_pinned_chart_values_render_the_digests():
    pinned = pin_digests.pin_values((render.CHART / "values.yaml").read_text(), DIGESTS)
    assert render.operator_images(render.helm_template(yaml.safe_load(pinned), include_crds=False)) == PINNED
    render.helm_lint(yaml.safe_load(pinned))


def test_pinned_kustomize_build_names_every_image_by_digest(cluster_wide):
    text = yaml.safe_dump_all(cluster_wide)
    pinned = render.parse_documents(pin_digests.pin_manifests(text, DIGESTS))
    assert render.operator_images(pinned) == PINNED
    again = render.parse_documents(pin_digests.pin_manifests(yaml.safe_dump_all(pinned), DIGESTS))
    assert render.operator_images(again) == PINNED, "pinning twice must not append a second digest"


def test_pinning_refuses_bad_digests_and_missing_images():
    with pytest.raises(pin_digests.PinError, match=r"sha256:<64 hex digits>"):
        pin_digests.pin_manifests("image: ghcr.io/kubetune/kubetune-operator:1.0.0\n", {"operator": "sha256:abc"})
    with pytest.raises(pin_digests.PinError, match=r"never name ghcr\.io/kubetune/kubetune-trainer"):
        pin_digests.pin_manifests("image: ghcr.io/kubetune/kubetune-operator:1.0.0\n", DIGESTS)
    with pytest.raises(pin_digests.PinError, match="no `digest:`"):
        pin_digests.pin_values("operator:\n  image:\n    repository: ghcr.io/kubetune/kubetune-operator\n", DIGESTS)

"""Pinning the released images by digest: the chart's `image.digest` values, and tools/pin_digests.py, which the
release workflow runs on the packaged chart's values and on the kustomize-built install.yaml."""

from __future__ import annotations

import subprocess
import sys

import kubetune
import pytest
import yaml

from tests.support.binaries import REPO_ROOT
from tools import pin_digests

from . import render

VERSION = kubetune.__version__
RELEASED = ("operator", "trainer", "server", "server-vllm")
DIGESTS = {name: "sha256:" + letter * 64 for name, letter in zip(RELEASED, "abcd", strict=True)}


PINNED = {name: f"ghcr.io/kubetune/kubetune-{name}:{VERSION}@{DIGESTS[name]}" for name in RELEASED}


def test_every_released_image_is_pinned():
    """The vLLM server image is released like the others (.github/workflows/release.yml): its digest is pinned too."""
    assert pin_digests.IMAGES == RELEASED


def test_by_default_the_chart_pulls_by_tag(helm_default):
    assert not any("@" in image for image in render.operator_images(helm_default).values())


def test_chart_digest_values_pin_every_image():
    values = {name: {"image": {"digest": digest}} for name, digest in DIGESTS.items() if name != "server-vllm"}
    values["server"]["vllmImage"] = {"digest": DIGESTS["server-vllm"]}
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


def test_each_server_digest_lands_on_its_own_image():
    """`kubetune-server` is a prefix of `kubetune-server-vllm`: neither digest may land on the other image."""
    server, vllm = "a: ghcr.io/kubetune/kubetune-server:1.0.0", "b: ghcr.io/kubetune/kubetune-server-vllm:1.0.0"
    text = f"{server}\n{vllm}\n"
    pinned_server = pin_digests.pin_manifests(text, {"server": DIGESTS["server"]})
    assert pinned_server == f"{server}@{DIGESTS['server']}\n{vllm}\n"
    pinned_vllm = pin_digests.pin_manifests(text, {"server-vllm": DIGESTS["server-vllm"]})
    assert pinned_vllm == f"{server}\n{vllm}@{DIGESTS['server-vllm']}\n"
    values = (render.CHART / "values.yaml").read_text()
    server_values = yaml.safe_load(pin_digests.pin_values(values, {"server": DIGESTS["server"]}))["server"]
    assert (server_values["image"]["digest"], server_values["vllmImage"]["digest"]) == (DIGESTS["server"], "")
    vllm_values = yaml.safe_load(pin_digests.pin_values(values, {"server-vllm": DIGESTS["server-vllm"]}))["server"]
    assert (vllm_values["image"]["digest"], vllm_values["vllmImage"]["digest"]) == ("", DIGESTS["server-vllm"])


def _cli(*arguments: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(REPO_ROOT / "tools" / "pin_digests.py"), *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)


def test_the_release_workflows_command_line_pins_all_four_images(tmp_path, cluster_wide):
    """As the release's chart job runs it: `values` on a copy of the chart's values, `manifests` on install.yaml."""
    flags = [item for name, digest in DIGESTS.items() for item in (f"--{name}", digest)]
    values = tmp_path / "values.yaml"
    values.write_text((render.CHART / "values.yaml").read_text())
    assert _cli("values", str(values), *flags).returncode == 0
    assert (
        render.operator_images(render.helm_template(yaml.safe_load(values.read_text()), include_crds=False)) == PINNED
    )
    install = tmp_path / "install.yaml"
    install.write_text(yaml.safe_dump_all(cluster_wide))
    assert _cli("manifests", str(install), *flags).returncode == 0
    assert render.operator_images(render.parse_documents(install.read_text())) == PINNED
    without_vllm = _cli("manifests", str(install), *flags[:-2])
    assert without_vllm.returncode == 2 and "--server-vllm" in without_vllm.stderr

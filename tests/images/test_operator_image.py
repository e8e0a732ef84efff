"""The operator image, built from deploy/operator.Dockerfile, runs as its manifests run it: the declared entry point
and user, on a read-only root filesystem with only /tmp writable, and reports the version it was built from.
(Against a real API server: tests/cluster/test_operator_image.py.)"""

from __future__ import annotations

import kubetune
import pytest

from tests.deploy import render
from tests.support import images

# A cold cache builds the base and the image inside the first test.
pytestmark = [pytest.mark.images, pytest.mark.timeout(images.BUILD_TIMEOUT)]


@pytest.fixture(scope="module")
def image(buildah) -> images.Image:
    return images.built("operator")


@pytest.fixture(scope="module")
def deployment_container() -> dict:
    manifests = render.kustomize(render.OVERLAYS / "cluster-wide")
    pod = render.one(manifests, "Deployment")["spec"]["template"]["spec"]
    return {**pod["containers"][0], "podSecurityContext": pod["securityContext"]}


def test_the_image_declares_what_the_deployment_runs(image, deployment_container):
    assert image.entrypoint == deployment_container["command"]
    assert int(image.user.split(":")[0]) > 0  # numeric and not root: what the kubelet's runAsNonRoot check needs
    assert deployment_container["podSecurityContext"]["runAsNonRoot"] is True
    assert deployment_container["securityContext"]["readOnlyRootFilesystem"] is True
    assert [mount["mountPath"] for mount in deployment_container["volumeMounts"]] == ["/tmp"]


def test_reports_its_version_as_its_user_on_a_read_only_root(image, container):
    program = image.entrypoint[0]
    result = container(image).run([], entrypoint=[program, "--version"], read_only=True, tmpfs_tmp=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"kubetune {kubetune.__version__}"


def test_its_root_filesystem_is_really_read_only_there(image, container):
    """The check above would prove nothing if the runtime left the root writable."""
    probe = "import pathlib; pathlib.Path('/tmp/ok').write_text('x'); pathlib.Path('/opt/kubetune/x').write_text('x')"
    result = container(image).run([], entrypoint=["python", "-c", probe], read_only=True, tmpfs_tmp=True)
    assert result.returncode != 0 and "Read-only file system" in result.stderr, result.stderr


@pytest.mark.parametrize("user", [None, "1000870000:0"], ids=["image-user", "openshift-arbitrary-uid"])
def test_kopfs_peering_identity_resolves_for_any_uid(image, container, user):
    """kopf names its peering identity with getpass.getuser(); for a uid without a name it raises and the operator
    dies at startup (tests/cluster/test_operator_image.py met this). The image's user and an arbitrary one work."""
    probe = "import getpass; print(getpass.getuser())"
    result = container(image).run([], entrypoint=["python", "-c", probe], user=user, read_only=True, tmpfs_tmp=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "kubetune"

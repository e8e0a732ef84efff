"""One version everywhere: the distribution, `kubetune --version`, the operator's default images, the Helm chart,
the kustomize manifests and CHANGELOG.md all say kubetune.__version__ (tools/version.py keeps them so)."""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
from pathlib import Path

import kubetune
import pytest
import yaml

from tests.support.binaries import REPO_ROOT
from tools import version as versioning

from . import render

VERSION = kubetune.__version__
CHART = REPO_ROOT / "deploy" / "helm" / "kubetune"


def _copy_versioned_files(target: Path) -> Path:
    """The files tools/version.py reads or writes, copied into `target` (a repository root for it)."""
    for relative in {versioning.SOURCE, versioning.CHANGELOG, *(stamp.path for stamp in versioning.STAMPS)}:
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO_ROOT / relative, target / relative)
    return target


def test_every_stamped_file_spells_the_version():
    assert versioning.problems() == []
    assert versioning.read_version() == VERSION


def test_the_distribution_and_the_cli_report_the_version():
    assert importlib.metadata.version("kubetune") == VERSION, "reinstall after a version change: make setup"
    cli = Path(sys.executable).parent / "kubetune"
    result = subprocess.run([str(cli), "--version"], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == f"kubetune {VERSION}"


def test_chart_version_and_app_version_are_the_version():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["version"] == chart["appVersion"] == VERSION


def test_installs_and_operator_defaults_name_the_released_images(cluster_wide, helm_default):
    from kubetune.operator.settings import OperatorSettings

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    released = {name: f"{values[name]['image']['repository']}:{VERSION}" for name in ("operator", "trainer", "server")}
    released["server-vllm"] = f"{values['server']['vllmImage']['repository']}:{VERSION}"
    assert released["operator"] == f"ghcr.io/kubetune/kubetune-operator:{VERSION}"
    assert released["server-vllm"] == f"ghcr.io/kubetune/kubetune-server-vllm:{VERSION}"
    assert render.operator_images(cluster_wide) == released
    assert render.operator_images(helm_default) == released
    defaults = OperatorSettings()
    assert (defaults.trainer_image, defaults.server_image, defaults.server_vllm_image) == (
        released["trainer"],
        released["server"],
        released["server-vllm"],
    )


def test_the_changelog_has_notes_for_the_version():
    notes = versioning.changelog_section(VERSION)
    assert notes and not notes.startswith("## ")


def test_set_version_rewrites_every_stamped_place(tmp_path):
    root = _copy_versioned_files(tmp_path)
    changed = versioning.set_version("9.8.7", root)
    assert {path.relative_to(root) for path in changed} == {versioning.SOURCE, *(s.path for s in versioning.STAMPS)}
    assert versioning.read_version(root) == "9.8.7"
    assert versioning.problems(root) == ["CHANGELOG.md: no section '## [9.8.7]'"]
    changelog = root / versioning.CHANGELOG
    changelog.write_text(changelog.read_text().replace("## [Unreleased]\n", "## [Unreleased]\n\n## [9.8.7]\n\n- x\n"))
    assert versioning.problems(root) == []
    deployment = (root / "deploy/kustomize/base/deployment.yaml").read_text()
    # operator, trainer, server and vLLM server images
    assert deployment.count(":9.8.7") == 4 and f":{VERSION}\n" not in deployment


def test_check_names_the_file_that_disagrees(tmp_path):
    root = _copy_versioned_files(tmp_path)
    chart = root / "deploy/helm/kubetune/Chart.yaml"
    chart.write_text(chart.read_text().replace(f'appVersion: "{VERSION}"', 'appVersion: "0.0.9"'))
    assert versioning.problems(root) == [
        "deploy/helm/kubetune/Chart.yaml: the chart appVersion (the default image tag) say 0.0.9, not " + VERSION
    ]
    assert versioning.problems(REPO_ROOT, expected="0.0.9") == [
        f"operator/kubetune/__init__.py: the version is {VERSION}, expected 0.0.9"
    ]


@pytest.mark.parametrize("bad", ["1.2", "v1.2.3", "1.2.3-rc.1", "1.2.3rc1", ""])
def test_only_plain_semver_is_accepted(bad, tmp_path):
    with pytest.raises(versioning.VersionError, match=r"MAJOR\.MINOR\.PATCH"):
        versioning.set_version(bad, _copy_versioned_files(tmp_path))


def test_the_release_check_of_a_tag(tmp_path):
    script = [sys.executable, str(REPO_ROOT / "tools" / "version.py")]
    ok = subprocess.run([*script, "check", "--tag", f"v{VERSION}"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    wrong = subprocess.run([*script, "check", "--tag", "v0.0.9"], capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 1 and "expected 0.0.9" in wrong.stderr

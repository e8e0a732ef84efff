"""`make generate` copies the CRDs into the kustomize base and the Helm chart; `kubetune crds --check` covers them."""

from __future__ import annotations

import shutil

from kubetune import generate
from kubetune.cli import main

from tests.support.binaries import REPO_ROOT


def test_copies_are_generated_files():
    files = generate.generated_files()
    for folder in generate.CRD_COPY_DIRS:
        copies = {path for path in files if path.startswith(folder + "/")}
        assert {path.rsplit("/", 1)[1] for path in copies} == {
            p.rsplit("/", 1)[1] for p in files if p.startswith("crds/")
        }


def test_copies_in_this_checkout_are_current():
    assert generate.stale(REPO_ROOT) == [], "run make generate"


def test_check_reports_a_changed_copy(tmp_path, capsys):
    generate.write(tmp_path)
    assert main(["crds", "--check", "--root", str(tmp_path)]) == 0
    copy = next(path for path in generate.generated_files() if path.startswith("deploy/helm/"))
    (tmp_path / copy).write_text((tmp_path / copy).read_text() + "# edited\n")
    assert main(["crds", "--check", "--root", str(tmp_path)]) == 1
    assert copy in capsys.readouterr().err
    shutil.rmtree(tmp_path / "deploy")
    assert main(["crds", "--check", "--root", str(tmp_path)]) == 1

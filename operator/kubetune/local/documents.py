"""Read the YAML a user would `kubectl apply`, and validate every document with the API models."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import ValidationError

from kubetune.api import FineTuneJob, ModelServe, format_validation_error, parse_resource


class DocumentError(ValueError):
    """A document that is not valid YAML or not a valid kubetune resource; names the file and document."""


@dataclass
class Bundle:
    """The kubetune resources found in the given files, in file order."""

    jobs: list[FineTuneJob] = field(default_factory=list)
    serves: list[ModelServe] = field(default_factory=list)

    def job(self, name: str) -> FineTuneJob | None:
        return next((job for job in self.jobs if job.metadata.name == name), None)


def load_bundle(paths: list[Path]) -> Bundle:
    """Parse every document; other kinds (ConfigMaps, Secrets) are skipped, broken ones raise DocumentError."""
    bundle = Bundle()
    for path in paths:
        try:
            documents = list(yaml.safe_load_all(Path(path).read_text(encoding="utf-8")))
        except (OSError, yaml.YAMLError) as error:
            raise DocumentError(f"{path}: cannot read YAML: {error}") from error
        for index, document in enumerate(documents):
            if not document:
                continue
            where = f"{path} (document {index + 1})"
            if not isinstance(document, dict) or document.get("apiVersion", "").split("/")[0] != "kubetune.dev":
                continue
            try:
                resource = parse_resource(document)
            except ValidationError as error:
                raise DocumentError(f"{where}: {format_validation_error(error)}") from error
            except ValueError as error:
                raise DocumentError(f"{where}: {error}") from error
            (bundle.jobs if isinstance(resource, FineTuneJob) else bundle.serves).append(resource)
    names = [job.metadata.name for job in bundle.jobs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise DocumentError(f"FineTuneJob names must be unique; repeated: {', '.join(repeated)}")
    if not bundle.jobs and not bundle.serves:
        raise DocumentError("no FineTuneJob or ModelServe found in " + ", ".join(str(p) for p in paths))
    return bundle

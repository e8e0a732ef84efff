"""`kubetune results ftj/NAME`: a finished FineTuneJob's result files (model card, metrics.json, loss-curve picture,
human-evaluation sheet) fetched with the user's own kubeconfig, without exec'ing into a pod or mounting its volume.

The trainer copies them into its report ConfigMap when it finishes (kubetune_trainer.results_report), within a
size budget: the index (`results`) says which files are there and how many sheet rows had to be left out; the
whole files stay on the output volume. Only the known file names are written, whatever the ConfigMap says.
Needs `get` on finetunejobs.kubetune.dev and configmaps in the namespace.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .api.runtime import (
    HUMAN_EVAL_FILE,
    LOSS_CURVES_FILE,
    METRICS_FILE,
    MODEL_CARD_FILE,
    REPORT_RESULTS_KEY,
    REPORT_RESULTS_PREFIX,
)
from .operator import naming

RESULT_FILES = (MODEL_CARD_FILE, METRICS_FILE, LOSS_CURVES_FILE, HUMAN_EVAL_FILE)
KIND_PREFIXES = ("ftj", "finetunejob", "finetunejobs", "finetunejob.kubetune.dev", "finetunejobs.kubetune.dev")


class ResultsError(Exception):
    """Why there are no results to fetch (exit code 1, one line for the user)."""


class ObjectReader(Protocol):
    def get(self, res: Any, namespace: str | None, name: str) -> dict[str, Any] | None: ...


@dataclass
class FetchedResults:
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def parse_target(text: str) -> str:
    """The FineTuneJob's name from `ftj/NAME` (kubectl's forms: finetunejob/NAME, ...) or a bare NAME."""
    kind, slash, name = text.rpartition("/")
    if slash and kind.lower() not in KIND_PREFIXES:
        raise ResultsError(f"{text!r}: expected ftj/NAME (or finetunejob/NAME, or NAME), not a {kind!r}")
    if not name:
        raise ResultsError(f"{text!r}: no FineTuneJob name after the slash")
    return name


def fetch_results(kube: ObjectReader, namespace: str, name: str, output: Path) -> FetchedResults:
    """Write the result files of FineTuneJob `namespace/name` into `output`; ResultsError when there are none."""
    from .operator.kube import CONFIGMAPS, FINETUNEJOBS

    ftj = kube.get(FINETUNEJOBS, namespace, name)
    if ftj is None:
        raise ResultsError(f"no FineTuneJob {name!r} in namespace {namespace!r}")
    status = ftj.get("status") or {}
    phase = status.get("phase") or "Pending"
    if phase == "Failed":
        raise ResultsError(
            f"FineTuneJob {name} failed, so it has no results: {status.get('message') or 'see its status'}"
        )
    if phase != "Succeeded":
        raise ResultsError(
            f"FineTuneJob {name} has not finished yet (phase {phase}); results come once it has Succeeded"
        )
    report_name = naming.report_configmap(name)
    report = kube.get(CONFIGMAPS, namespace, report_name)
    owners = {ref.get("uid") for ref in ((report or {}).get("metadata") or {}).get("ownerReferences") or []}
    if report is not None and ftj["metadata"].get("uid") not in owners:
        raise ResultsError(f"ConfigMap {report_name} is not FineTuneJob {name}'s report (not owned by it); not read")
    data, binary = (report or {}).get("data") or {}, (report or {}).get("binaryData") or {}
    if REPORT_RESULTS_KEY not in data:
        where = _output_location(status)
        raise ResultsError(
            f"FineTuneJob {name} succeeded but reported no result files: its trainer image predates "
            f"`kubetune results`, or it could not write its report ConfigMap {report_name} (see its log). "
            f"The files are on its output volume{where}."
        )
    try:
        index = json.loads(data[REPORT_RESULTS_KEY]).get("files") or {}
    except (ValueError, AttributeError):
        raise ResultsError(f"ConfigMap {report_name}: the results index is not valid JSON") from None
    output.mkdir(parents=True, exist_ok=True)
    fetched = FetchedResults()
    for file_name in RESULT_FILES:
        entry = index.get(file_name)
        if not isinstance(entry, dict):
            continue
        content = _content(data, binary, file_name)
        if content is None:
            fetched.notes.append(
                f"{file_name}: too large for the report ConfigMap; it is on the output volume at "
                f"{entry.get('volumePath')}"
            )
            continue
        path = output / file_name
        path.write_bytes(content)
        fetched.files.append(path)
        rows, included = entry.get("rows"), entry.get("rowsIncluded")
        if isinstance(rows, int) and isinstance(included, int) and included < rows:
            fetched.notes.append(
                f"{file_name}: the first {included} of {rows} rows (the report ConfigMap's size budget); the whole "
                f"sheet is on the output volume at {entry.get('volumePath')}"
            )
    return fetched


def _content(data: dict[str, str], binary: dict[str, str], file_name: str) -> bytes | None:
    key = REPORT_RESULTS_PREFIX + file_name
    if key in binary:
        try:
            return base64.b64decode(binary[key], validate=True)
        except (binascii.Error, ValueError):
            raise ResultsError(f"binaryData {key} is not valid base64") from None
    if key in data:
        return data[key].encode("utf-8")
    return None


def _output_location(status: dict[str, Any]) -> str:
    pvc = ((status.get("output") or {}).get("pvc")) or {}
    if pvc.get("claimName"):
        return f" (claim {pvc['claimName']}, next to {pvc.get('path') or 'its root'})"
    return ""


def _default_namespace(kubeconfig: str | None) -> str:
    """The kubeconfig's current-context namespace, as kubectl uses it; else `default`."""
    import kubernetes

    try:
        _, active = kubernetes.config.list_kube_config_contexts(config_file=kubeconfig)
    except (kubernetes.config.ConfigException, OSError):
        return "default"
    return ((active or {}).get("context") or {}).get("namespace") or "default"


def _results(args: argparse.Namespace) -> int:
    try:
        name = parse_target(args.target)
        from .operator.kube import Kube, KubeApiError, load_configuration
    except ResultsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ImportError:
        print("error: kubetune results needs the Kubernetes client: pip install 'kubetune[operator]'", file=sys.stderr)
        return 1
    namespace = args.namespace or _default_namespace(args.kubeconfig)
    output = Path(args.output or f"{name}-results")
    try:
        kube = Kube(load_configuration(args.kubeconfig))
    except Exception as error:  # the client's own errors: no kubeconfig, a broken one
        print(f"error: cannot load a kubeconfig: {error}", file=sys.stderr)
        return 1
    try:
        fetched = fetch_results(kube, namespace, name, output)
    except ResultsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KubeApiError as error:
        print(f"error: the API server answered {error.status} {error.reason}: {error.message}", file=sys.stderr)
        return 1
    finally:
        kube.close()
    for path in fetched.files:
        print(path)
    for note in fetched.notes:
        print(f"note: {note}", file=sys.stderr)
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "results",
        help="fetch a finished FineTuneJob's model card, metrics, loss curves and human-eval sheet",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("target", metavar="ftj/NAME", help="the FineTuneJob (ftj/NAME or NAME)")
    parser.add_argument("-n", "--namespace", help="its namespace (default: the kubeconfig context's)")
    parser.add_argument("--output", help="folder to write the files to (default: ./NAME-results)")
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)")
    parser.set_defaults(handler=_results)

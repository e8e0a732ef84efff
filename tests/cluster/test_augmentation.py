"""dataset.augmentation on the real control plane: the API server admits the example, the trainer Job gets what
an augmentation model needs (its claim mounted read-only, its own token variable, the model cache for a Hub id),
and a FineTuneRuntime's allowedBaseModels refuses a disallowed augmentation model like a disallowed base model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.augmentation_models import build_ending_model, write_instruction_rows
from tests.support.kube.server import FTJ, JOBS
from tests.support.tiny_model import build_tiny_model

from .helpers import condition, exists, finetunejob, operator_requests, trainer_report_client, wait_phase

RUNTIMES = ("kubetune.dev/v1alpha1", "finetuneruntimes")
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "augmentation.yaml"


@pytest.fixture
def runtime(control_plane, ns: str) -> Iterator[str]:
    """A runtime allowing Qwen models and folders of the 'models' claim only."""
    name = f"augment-{ns}"[:253]
    body = {
        "apiVersion": RUNTIMES[0],
        "kind": "FineTuneRuntime",
        "metadata": {"name": name},
        "spec": {"allowedBaseModels": ["Qwen/*", "pvc:models/*"]},
    }
    control_plane.admin.create(RUNTIMES, None, body)
    yield name
    control_plane.admin.delete(RUNTIMES, None, name)


def test_a_disallowed_augmentation_model_is_refused_like_a_disallowed_base_model(
    control_plane, runtime, operator, kube, ns
):
    since = control_plane.audit.offset()
    augmentation = {
        "paraphrase": {"copies": 2},  # the (allowed) base model: not reported again
        "backTranslation": {
            "model": {"name": "Helsinki-NLP/opus-mt-ko-en"},
            "reverseModel": {"pvc": {"claimName": "models", "path": "opus-mt-en-ko"}},
            "sourceLanguage": "Korean",
            "pivotLanguage": "English",
        },
    }
    dataset = {"configMap": {"name": "facts", "key": "train.jsonl"}, "format": "qa", "augmentation": augmentation}
    kube.create(FTJ, ns, finetunejob(ns, runtimeName=runtime, dataset=dataset))
    ftj = wait_phase(kube, ns, "sentiment", "Failed")
    validated = condition(ftj, "Validated")
    assert (validated["status"], validated["reason"]) == ("False", "PolicyViolation")
    message = validated["message"]
    assert "spec.dataset.augmentation.backTranslation.model 'Helsinki-NLP/opus-mt-ko-en' is not allowed" in message
    assert "Qwen/*" in message and runtime in message
    assert "reverseModel" not in message and "paraphrase" not in message  # those are allowed
    assert kube.find(JOBS, ns, "sentiment-train") is None
    assert operator_requests(control_plane, since, "create", "jobs") == []


def test_the_trainer_job_gets_what_the_augmentation_models_need(control_plane, runtime, operator, kube, ns):
    augmentation = {
        "paraphrase": {"model": {"name": "Qwen/Qwen2.5-1.5B-Instruct", "tokenSecretRef": {"name": "para-token"}}},
        "backTranslation": {
            "model": {"pvc": {"claimName": "models", "path": "translator"}},
            "sourceLanguage": "German",
            "pivotLanguage": "English",
        },
    }
    dataset = {"configMap": {"name": "facts", "key": "train.jsonl"}, "format": "qa", "augmentation": augmentation}
    kube.create(FTJ, ns, finetunejob(ns, runtimeName=runtime, dataset=dataset))
    job = kube.wait_for(JOBS, ns, "sentiment-train", lambda j: j is not None, what="to be created")
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    claims = {
        v["persistentVolumeClaim"]["claimName"]: v["persistentVolumeClaim"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims["models"].get("readOnly") is True  # the translator's claim, read-only
    env = {item["name"]: item for item in container["env"]}
    assert env["KUBETUNE_PARAPHRASE_HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "para-token", "key": "token"}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "hf-token"  # the base model's, unchanged
    assert "KUBETUNE_BACK_TRANSLATION_HF_TOKEN" not in env  # a folder on a claim needs no token
    # The Job is created before the status says so: wait for the condition rather than read it once.
    validated = lambda ftj: bool(ftj) and (condition(ftj, "Validated") or {}).get("status") == "True"  # noqa: E731
    kube.wait_for(FTJ, ns, "sentiment", validated, 30, what="to be Validated")


def test_the_augmentation_example_is_admitted(kube, ns):
    body = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    body["metadata"]["namespace"] = ns
    created = kube.create(FTJ, ns, body)
    augmentation = created["spec"]["dataset"]["augmentation"]
    assert augmentation["paraphrase"]["copies"] >= 1
    assert augmentation["backTranslation"]["pivotLanguage"]


def test_the_rows_added_reach_the_finetunejob_status(control_plane, operator, kube, kubelet, ns, tmp_path):
    """The trainer's augmentation report, sent with its own token to its report ConfigMap, is validated and copied
    into .status.metrics by the operator, and the API server keeps it (the CRD schema has the field)."""
    dataset = {"configMap": {"name": "facts", "key": "train.jsonl"}, "augmentation": {"paraphrase": {"copies": 2}}}
    kube.create(FTJ, ns, finetunejob(ns, dataset=dataset))
    kube.wait_for(JOBS, ns, "sentiment-train", exists)
    kubelet.start_job(ns, "sentiment-train")
    wait_phase(kube, ns, "sentiment", "Running")
    trainer = trainer_report_client(control_plane, ns, "sentiment", tmp_path)
    report = {
        "kind": "paraphrase",
        "model": "Qwen/Qwen2.5-0.5B-Instruct",
        "sourceRows": 90,
        "generated": 180,
        "added": 168,
        "droppedEmpty": 1,
        "droppedNotAQuestion": 3,
        "droppedUnchanged": 5,
        "droppedDuplicate": 2,
        "droppedTooLong": 1,
        "notRewritable": 0,
    }
    metrics = {"trainLoss": 0.7, "augmentation": [report]}
    assert trainer.patch_status({"metrics": metrics, "progress": {"step": 4, "totalSteps": 4, "percent": 100}})
    copied = lambda ftj: (ftj or {}).get("status", {}).get("metrics") == metrics  # noqa: E731
    kube.wait_for(FTJ, ns, "sentiment", copied, 30, what="to show the augmentation report")


@pytest.mark.slow
def test_the_trainer_pod_paraphrases_with_a_model_on_its_own_claim(operator, kube, kubelet, ns, tmp_path):
    """The real trainer, run from the Job's pod spec (command, args, env) by the fake kubelet: it loads the
    augmentation model from its claim, generates and caches the rows on the output claim, trains, and the count
    reaches the FineTuneJob's status. (The host harness shows every claim folder to the pod, so that the claim is
    mounted at all is checked on the Job above, in test_the_trainer_job_gets_what_the_augmentation_models_need.)"""
    claims = tmp_path / "claims"
    build_tiny_model(claims / "models" / "tiny")
    build_ending_model(claims / "paraphrasers" / "ending")
    rows = write_instruction_rows(claims / "data")["alpaca"]
    augmentation = {
        "paraphrase": {
            "model": {"pvc": {"claimName": "paraphrasers", "path": "ending"}},
            "copies": 2,
            "temperature": 1.0,
            "maxNewTokens": 12,
        },
        "fraction": 0.25,
    }
    dataset = {"pvc": {"claimName": "data", "path": rows.name}, "format": "alpaca", "augmentation": augmentation}
    spec = {
        "baseModel": {"pvc": {"claimName": "models", "path": "tiny"}},
        "dataset": dataset,
        "training": {"maxSteps": 2, "batchSize": 8, "gradientAccumulationSteps": 1},
        "resources": {"gpus": 0, "cpu": "2", "memory": "4Gi"},
    }
    kube.create(FTJ, ns, finetunejob(ns, **spec))
    kube.wait_for(JOBS, ns, "sentiment-train", exists, 30, "to be created")
    run = kubelet.run_job(ns, "sentiment-train", tmp_path / "trainer-pod", claims_root=claims)
    assert run.returncode == 0, run.stderr[-3000:]
    status = wait_phase(kube, ns, "sentiment", "Succeeded", "Failed")["status"]
    assert status["phase"] == "Succeeded", status
    [reported] = status["metrics"]["augmentation"]
    assert reported["kind"] == "paraphrase" and reported["model"] == "pvc:paraphrasers/ending"
    assert reported["added"] > 0 and reported["generated"] == reported["sourceRows"] * 2
    adapter = status["output"]["pvc"]
    run_folder = claims / adapter["claimName"] / adapter["path"]
    assert list((run_folder.parent / "augmentation").glob("*.json")), "cached beside the adapter, on the output claim"

"""`kubetune run --local` end to end on the tiny model: train, serve, answer; a second run reuses the adapter."""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path

import pytest
import yaml
from kubetune.local.runner import LocalRun
from kubetune_trainer.data_formats import ALPACA_TEMPLATE_NO_INPUT

from tests.support.tiny_model import build_tiny_model, synthetic_facts, write_facts_jsonl
from tests.trainer.helpers import LEARNING_TRAINING

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _complete(base_url: str, model: str, prompts: list[str]) -> list[str]:
    body = json.dumps({"model": model, "prompt": prompts, "max_tokens": 4, "temperature": 0}).encode()
    request = urllib.request.Request(
        f"{base_url}/v1/completions", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        choices = sorted(json.loads(response.read())["choices"], key=lambda choice: choice["index"])
    return [choice["text"].strip() for choice in choices]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("local-run")
    build_tiny_model(root / "models" / "tiny")
    write_facts_jsonl(root / "data" / "facts.jsonl", fmt="alpaca")
    documents = [
        {
            "apiVersion": "kubetune.dev/v1alpha1",
            "kind": "FineTuneJob",
            "metadata": {"name": "facts"},
            "spec": {
                "baseModel": {"pvc": {"claimName": "models", "path": "tiny"}},
                "dataset": {"pvc": {"claimName": "data", "path": "facts.jsonl"}, "evalFraction": 0.1},
                "training": LEARNING_TRAINING,
                "evaluation": {"humanEvalSamples": 2, "maxNewTokens": 6},
                "resources": {"gpus": 0},
            },
        },
        {
            "apiVersion": "kubetune.dev/v1alpha1",
            "kind": "ModelServe",
            "metadata": {"name": "facts"},
            "spec": {
                "adapters": [{"name": "facts-adapter", "fineTuneJobRef": {"name": "facts"}}],
                "generation": {"temperature": 0, "maxNewTokens": 8},
                "resources": {"gpus": 0},
            },
        },
    ]
    (root / "facts.yaml").write_text(yaml.safe_dump_all(documents))
    return root


def _run(workspace: Path, lines: list[str]) -> LocalRun:
    return LocalRun(
        files=[workspace / "facts.yaml"],
        workdir=workspace / "work",
        claims=[("models", workspace / "models"), ("data", workspace / "data")],
        port=_free_port(),
        say=lines.append,
    )


def test_trains_serves_and_answers_with_the_adapter(workspace: Path) -> None:
    lines: list[str] = []
    with _run(workspace, lines) as run:
        run.train_all()
        result = run.trained["facts"]
        assert result.how == "trained"
        assert (result.adapter_dir / "adapter_config.json").is_file()
        assert result.metrics["steps"] == LEARNING_TRAINING["maxSteps"]
        run.serve_all()
        server = run.servers[0]
        assert server.models == ["base", "facts-adapter"]
        facts = synthetic_facts()
        prompts = [ALPACA_TEMPLATE_NO_INPUT.format(instruction=fact.question) for fact in facts]
        tuned = _complete(server.base_url, "facts-adapter", prompts)
        base = _complete(server.base_url, "base", prompts)
    correct = sum(answer.startswith(fact.answer) for answer, fact in zip(tuned, facts, strict=True))
    base_correct = sum(answer.startswith(fact.answer) for answer, fact in zip(base, facts, strict=True))
    assert correct >= 15, tuned
    assert base_correct <= 2, base
    assert any("curl -s http://127.0.0.1" in line for line in lines)
    assert run.servers == []
    _assert_result_paths_printed(lines, result.adapter_dir)


def _assert_result_paths_printed(lines: list[str], adapter_dir: Path) -> None:
    """Where the card, the loss-curve picture and the review sheet are, as printed after training."""
    expected = {
        "model card": adapter_dir / "README.md",
        "loss curves": adapter_dir / "loss-curves.png",
        "human-eval sheet": adapter_dir.parent / "human-eval.csv",
    }
    for what, path in expected.items():
        assert f"  {what}: {path}" in lines, (what, lines)
        assert path.is_file()


def test_second_run_reuses_the_finished_adapter(workspace: Path) -> None:
    lines: list[str] = []
    with _run(workspace, lines) as run:
        run.train_all()
    assert run.trained["facts"].how == "reused"
    assert any("reusing the finished adapter" in line for line in lines)
    _assert_result_paths_printed(lines, run.trained["facts"].adapter_dir)

"""The bundled datasets: big and varied enough for the demo, in the formats their examples declare."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter

from tests.api.conftest import REPO

DATA = REPO / "examples" / "data"


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines()]


def _generator():
    spec = importlib.util.spec_from_file_location("generate_data", DATA / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_files_match_their_generator() -> None:
    generator = _generator()
    for name, rows in generator.datasets().items():
        assert (DATA / name).read_text(encoding="utf-8") == generator.to_jsonl(rows), f"regenerate {name}"


def test_sentiment_set_is_large_balanced_and_varied() -> None:
    rows = _rows("sentiment-ko.jsonl")
    assert len(rows) >= 300
    assert all(set(row) == {"instruction", "input", "output"} for row in rows)
    labels = Counter(row["output"] for row in rows)
    assert set(labels) == {"positive", "negative", "neutral"}, "the label alone: what the demo scores"
    assert max(labels.values()) - min(labels.values()) <= len(rows) // 20
    assert len({row["input"] for row in rows}) == len(rows)


def test_chat_set_has_user_and_assistant_turns() -> None:
    rows = _rows("support-chat-ko.jsonl")
    assert len(rows) >= 50
    for row in rows:
        roles = [message["role"] for message in row["messages"]]
        assert roles[0] == "user" and roles[-1] == "assistant"
        assert all(message["content"].strip() for message in row["messages"])


def test_medical_set_is_question_answer_with_a_caveat() -> None:
    rows = _rows("medical-qa-ko.jsonl")
    assert len(rows) >= 20
    assert all(set(row) == {"question", "answer"} and "의료진" in row["answer"] for row in rows)

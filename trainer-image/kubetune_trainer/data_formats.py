"""Turn raw rows into what trl trains on: prompt/completion pairs (alpaca, qa, chat) or plain text.

Prompt/completion rows give completion-only loss for free in trl (the prompt is masked), which is the
default for instruction data. Rows that do not fit the format stop the run with the row number and the
field, unless the spec allows skipping them; skipped rows are counted for the report.
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from datasets import Dataset

from .errors import InvalidInputError

ALPACA_TEMPLATE = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
ALPACA_TEMPLATE_NO_INPUT = "### Instruction:\n{instruction}\n\n### Response:\n"
QA_TEMPLATE = "### Instruction:\n{question}\n\n### Response:\n"
TEMPLATE_FIELDS = {"alpaca": {"instruction", "input"}, "qa": {"question"}}
REQUIRED_COLUMNS = {
    "alpaca": ("instruction", "output"),
    "qa": ("question", "answer"),
    "chat": ("messages",),
    "text": ("text",),
}
CHAT_ROLES = {"system", "user", "assistant", "tool"}
MAX_REPORTED_ERRORS = 5


class RowError(ValueError):
    """One row that does not fit the format: the field and what is wrong with it."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"field {field!r} {problem}")


@dataclass(frozen=True)
class FormattedData:
    """Rows ready for SFTTrainer plus what the report needs to know about them."""

    dataset: Dataset
    format: str
    prompt_template: str | None
    skipped_rows: int
    skipped_examples: tuple[str, ...]


def detect_format(columns: Iterable[str]) -> str:
    """Pick the format from the column names, or fail listing the columns found."""
    present = set(columns)
    for fmt in ("chat", "alpaca", "qa", "text"):
        if all(column in present for column in REQUIRED_COLUMNS[fmt]):
            return fmt
    expected = "; ".join(f"{fmt}: {', '.join(cols)}" for fmt, cols in REQUIRED_COLUMNS.items())
    raise InvalidInputError(
        f"dataset.format: cannot tell the format from the columns {sorted(present)}; expected columns for "
        f"{expected} (or set dataset.format)"
    )


def check_template(fmt: str, template: str | None) -> None:
    """A custom promptTemplate may only use the placeholders of its format."""
    if template is None or fmt not in TEMPLATE_FIELDS:
        return
    try:
        names = {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}
    except ValueError as error:
        raise InvalidInputError(f"dataset.promptTemplate: not a valid format string: {error}") from error
    unknown = names - TEMPLATE_FIELDS[fmt]
    if unknown or "" in names:
        allowed = ", ".join("{" + name + "}" for name in sorted(TEMPLATE_FIELDS[fmt]))
        raise InvalidInputError(
            f"dataset.promptTemplate: unknown placeholder(s) {sorted(unknown or {'{}'})} for format {fmt}; "
            f"allowed: {allowed} (write {{{{ and }}}} for literal braces)"
        )


def _text(row: dict[str, Any], field: str, *, required: bool = True) -> str:
    value = row.get(field)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise RowError(field, "is missing or empty")
        return ""
    if not isinstance(value, str):
        raise RowError(field, f"must be text, got {type(value).__name__}")
    return value


def _alpaca(row: dict[str, Any], template: str | None) -> dict[str, Any]:
    instruction, extra, output = _text(row, "instruction"), _text(row, "input", required=False), _text(row, "output")
    chosen = template or (ALPACA_TEMPLATE if extra else ALPACA_TEMPLATE_NO_INPUT)
    return {"prompt": chosen.format(instruction=instruction, input=extra), "completion": output}


def _qa(row: dict[str, Any], template: str | None) -> dict[str, Any]:
    question, answer = _text(row, "question"), _text(row, "answer")
    return {"prompt": (template or QA_TEMPLATE).format(question=question), "completion": answer}


def _chat(row: dict[str, Any], template: str | None) -> dict[str, Any]:
    messages = row.get("messages")
    if not isinstance(messages, list) or len(messages) < 2:
        raise RowError("messages", "must be a list of at least two messages ending with an assistant message")
    cleaned = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise RowError(f"messages[{index}]", "must be an object with role and content")
        role, content = message.get("role"), message.get("content")
        if role not in CHAT_ROLES:
            raise RowError(f"messages[{index}].role", f"must be one of {sorted(CHAT_ROLES)}, got {role!r}")
        if not isinstance(content, str):
            raise RowError(f"messages[{index}].content", f"must be text, got {type(content).__name__}")
        cleaned.append({"role": role, "content": content})
    if cleaned[-1]["role"] != "assistant" or not cleaned[-1]["content"].strip():
        raise RowError(f"messages[{len(cleaned) - 1}]", "must be a non-empty assistant message (the trained answer)")
    return {"prompt": cleaned[:-1], "completion": cleaned[-1:]}


def _plain_text(row: dict[str, Any], template: str | None) -> dict[str, Any]:
    return {"text": _text(row, "text")}


FORMATTERS = {"alpaca": _alpaca, "qa": _qa, "chat": _chat, "text": _plain_text}
PREFIXED_FIELD = {"alpaca": "instruction", "qa": "question", "text": "text"}


def add_task_prefix(row: dict[str, Any], fmt: str, prefix: str) -> dict[str, Any]:
    """The row with `prefix` put before what the user asks (alpaca instruction, qa question, first user message of
    a chat; the text of text rows), never before the answer. Rows whose field is missing or empty are left as they
    are, so the format check still reports them."""
    if fmt == "chat":
        messages = row.get("messages")
        if not isinstance(messages, list):
            return row
        for index, message in enumerate(messages):
            if isinstance(message, dict) and message.get("role") == "user" and isinstance(message.get("content"), str):
                prefixed = {**message, "content": prefix + message["content"]}
                return {**row, "messages": [*messages[:index], prefixed, *messages[index + 1 :]]}
        return row
    field = PREFIXED_FIELD[fmt]
    value = row.get(field)
    return {**row, field: prefix + value} if isinstance(value, str) and value.strip() else row


def format_rows(
    rows: Dataset,
    fmt: str | None,
    template: str | None = None,
    *,
    skip_invalid: bool = False,
    what: str = "dataset",
    task_prefix: str | None = None,
) -> FormattedData:
    """Format every row (after `add_task_prefix` when a prefix is given); row numbers in errors count from 1 in
    source order."""
    if len(rows) == 0:
        raise InvalidInputError(f"{what} is empty: it has no rows")
    fmt = fmt or detect_format(rows.column_names)
    missing = [column for column in REQUIRED_COLUMNS[fmt] if column not in rows.column_names]
    if missing:
        raise InvalidInputError(
            f"dataset.format {fmt}: column(s) {missing} missing; the data has columns {rows.column_names}"
        )
    check_template(fmt, template)
    formatter = FORMATTERS[fmt]
    formatted, problems = [], []
    for number, row in enumerate(rows, start=1):
        try:
            formatted.append(formatter(add_task_prefix(row, fmt, task_prefix) if task_prefix else row, template))
        except RowError as error:
            problems.append(f"row {number}: {error}")
            if not skip_invalid:
                raise InvalidInputError(
                    f"{what} row {number} does not fit format {fmt}: {error} "
                    "(fix the row or set dataset.skipInvalidRows: true)"
                ) from None
    if not formatted:
        raise InvalidInputError(f"{what}: none of its {len(rows)} rows fits format {fmt} ({problems[0]})")
    effective_template = template or {"alpaca": ALPACA_TEMPLATE, "qa": QA_TEMPLATE}.get(fmt)
    return FormattedData(
        dataset=Dataset.from_list(formatted),
        format=fmt,
        prompt_template=effective_template,
        skipped_rows=len(problems),
        skipped_examples=tuple(problems[:MAX_REPORTED_ERRORS]),
    )


def every_assistant_turn(rows: Dataset) -> Dataset:
    """One prompt/completion row per assistant turn of each conversation (the turns before it are the prompt), so
    that every assistant answer is trained, not only the last one.

    TRL's own way, `assistant_only_loss`, needs a chat template with `{% generation %}` markers; TRL can patch only
    the templates of the model families it knows and refuses the others (SmolLM2, Mistral, Llama 2, ...). Rows of
    one conversation stay in the split it was put in, so no conversation is partly trained and partly evaluated."""
    expanded = []
    for row in rows:
        conversation = [*row["prompt"], *row["completion"]]
        for index, message in enumerate(conversation):
            if index and message["role"] == "assistant" and message["content"].strip():
                expanded.append({"prompt": conversation[:index], "completion": [message]})
    return Dataset.from_list(expanded)


def split_for_eval(train: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset | None]:
    """Hold out `fraction` of the rows (at least one) with the training seed; 0 or a single row holds out none."""
    if fraction <= 0 or len(train) < 2:
        return train, None
    eval_rows = max(1, round(len(train) * fraction))
    parts = train.train_test_split(test_size=eval_rows, seed=seed, shuffle=True)
    return parts["train"], parts["test"]


def limit_rows(train: Dataset, max_samples: int | None, seed: int) -> Dataset:
    """At most `max_samples` rows: the first ones after a seeded shuffle."""
    if max_samples is None or max_samples >= len(train):
        return train
    return train.shuffle(seed=seed).select(range(max_samples))


def fingerprint(*datasets: Dataset | None) -> str:
    """A content hash of the formatted rows, for the manifest (same data -> same hash)."""
    digest = hashlib.sha256()
    for dataset in datasets:
        digest.update(b"\x00split\x00")
        if dataset is None:
            continue
        for row in dataset:
            digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode())
            digest.update(b"\n")
    return "sha256:" + digest.hexdigest()

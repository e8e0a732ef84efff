"""The part of a formatted training row that augmentation rewrites, and the row rebuilt around a new text.

Only the prompt side is rewritten and the completion is kept word for word: a paraphrased question still has the
same answer, while a paraphrased answer could stop being correct (a changed number, name or step), and the
completion is what the loss trains. What is rewritten per format: the instruction of alpaca rows (their input is
often the material the answer quotes), the question of qa rows, and the first user message of a chat conversation,
the one that starts it: with completion-only loss every assistant turn becomes a row of its own whose context begins
with that message, so every turn of an augmented conversation differs from the original (rewriting a later message
would repeat the earlier turns unchanged, which only weighs them double). A
dataset.mix source's task prefix (which starts the instruction, question or first user message) is not rewritten: it
is taken off the text and put back on the new one, so the new row still says which task it is.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .data_formats import ALPACA_TEMPLATE, ALPACA_TEMPLATE_NO_INPUT, QA_TEMPLATE

REWRITTEN_FIELD = {"alpaca": "instruction", "qa": "question"}


@dataclass(frozen=True)
class Rewritable:
    """The text to rewrite in one row, and how to build the row again with another text in its place."""

    text: str
    rebuild: Callable[[str], dict[str, Any]]


def _template_pattern(template: str) -> re.Pattern[str]:
    """A regular expression that matches what `template.format(...)` renders, one named group per placeholder."""
    parts, seen = [], set()
    for literal, field, _, _ in string.Formatter().parse(template):
        parts.append(re.escape(literal))
        if field is None:
            continue
        parts.append(f"(?P={field})" if field in seen else f"(?P<{field}>.*?)")
        seen.add(field)
    return re.compile("".join(parts), re.DOTALL)


def _templates(fmt: str, template: str | None) -> list[str]:
    """The templates the formatter may have used: alpaca's default has a variant for rows without input."""
    if template == ALPACA_TEMPLATE or (template is None and fmt == "alpaca"):
        return [ALPACA_TEMPLATE, ALPACA_TEMPLATE_NO_INPUT]
    return [template or QA_TEMPLATE]


def _from_template(row: dict[str, Any], fmt: str, template: str | None) -> Rewritable | None:
    prompt, field = row["prompt"], REWRITTEN_FIELD[fmt]
    for candidate in _templates(fmt, template):
        found = _template_pattern(candidate).fullmatch(prompt)
        if found is None or field not in found.groupdict():
            continue
        values = found.groupdict()
        values.setdefault("input", "")
        if candidate.format(**values) != prompt or not values[field].strip():
            continue  # a conversion or format spec in the template: the row cannot be rebuilt faithfully

        def rebuild(text: str, candidate: str = candidate, values: dict[str, str] = values) -> dict[str, Any]:
            return {**row, "prompt": candidate.format(**{**values, field: text})}

        return Rewritable(values[field], rebuild)
    return None


def _from_chat(row: dict[str, Any]) -> Rewritable | None:
    messages = row["prompt"]
    users = [index for index, message in enumerate(messages) if message["role"] == "user"]
    if not users or not messages[users[0]]["content"].strip():
        return None
    first = users[0]

    def rebuild(text: str) -> dict[str, Any]:
        changed = [dict(message) for message in messages]
        changed[first]["content"] = text
        return {**row, "prompt": changed}

    return Rewritable(messages[first]["content"], rebuild)


def _without_prefix(found: Rewritable | None, prefix: str | None) -> Rewritable | None:
    if found is None or not prefix or not found.text.startswith(prefix):
        return found
    rest = found.text[len(prefix) :]
    if not rest.strip():
        return None
    return Rewritable(rest, lambda text: found.rebuild(prefix + text))


def rewritable(
    row: dict[str, Any], fmt: str, template: str | None, task_prefix: str | None = None
) -> Rewritable | None:
    """The prompt text of a formatted alpaca, qa or chat row (without the source's task prefix), or None when there
    is none to rewrite (a chat prompt without a user message, a prompt that does not follow the template)."""
    if fmt == "chat":
        return _without_prefix(_from_chat(row), task_prefix)
    if fmt in REWRITTEN_FIELD and isinstance(row.get("prompt"), str):
        return _without_prefix(_from_template(row, fmt, template), task_prefix)
    return None

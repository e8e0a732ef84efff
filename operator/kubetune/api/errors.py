"""Turn pydantic validation errors into one line per problem that names the field as users write it."""

from __future__ import annotations

from pydantic import ValidationError


def field_path(location: tuple[int | str, ...], root: str = "") -> str:
    """`('spec', 'adapters', 0, 'name')` -> `spec.adapters[0].name`."""
    text = root
    for part in location:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part.startswith(("function-after", "function-before", "json-or-python")):
            continue
        else:
            text += f".{part}" if text else part
    return text or "(root)"


def _describe(error: dict) -> str:
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return "unknown field (check the spelling; fields are camelCase)"
    if error["type"] == "missing":
        return "required field is missing"
    if error["type"] == "literal_error":
        return f"{message}, got {error.get('input')!r}"
    if error["type"] in {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}:
        return f"{message}, got {error.get('input')!r}"
    return message


def validation_messages(exc: ValidationError, root: str = "") -> list[str]:
    """One `field: what is wrong` line per error, in the order pydantic found them."""
    return [f"{field_path(tuple(err['loc']), root)}: {_describe(err)}" for err in exc.errors()]


def format_validation_error(exc: ValidationError, root: str = "") -> str:
    """All problems of one object as a single message (for status, events and CLI output)."""
    return "; ".join(validation_messages(exc, root))

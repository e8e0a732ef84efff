"""Every error response in one OpenAI-style envelope: our own errors, FastAPI validation, 404/405, crashes."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .errors import ApiError, error_envelope

log = logging.getLogger(__name__)

_TYPES = {
    400: ("invalid_request_error", "invalid_value"),
    401: ("authentication_error", "invalid_api_key"),
    404: ("not_found_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
    415: ("invalid_request_error", "unsupported_media_type"),
    503: ("service_unavailable", "not_ready"),
}


def envelope_response(status: int, message: str, param: str | None = None, headers: dict | None = None) -> JSONResponse:
    error_type, code = _TYPES.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
    return JSONResponse(error_envelope(message, error_type, param, code), status_code=status, headers=headers)


def _location(loc: tuple) -> str | None:
    parts = [str(part) for part in loc if part not in ("body", "query", "path", "header")]
    # Drop pydantic's union branch labels such as 'str' or 'list[str]' or 'function-after[...]'.
    parts = [
        p for p in parts if not (p.startswith(("function-", "constrained-")) or "[" in p or p in {"str", "int", "list"})
    ]
    text = ""
    for part in parts:
        text += f"[{part}]" if part.isdigit() else (f".{part}" if text else part)
    return text or None


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if any(error.get("type") == "json_invalid" for error in errors):
        return "the request body is not valid JSON", None
    first = errors[0] if errors else {}
    param = _location(tuple(first.get("loc", ())))
    if first.get("type") == "missing" and param is None:
        return "the request needs a JSON body", None
    lines = []
    for error in errors[:5]:
        where = _location(tuple(error.get("loc", ()))) or "body"
        kind = error.get("type", "")
        if kind == "extra_forbidden":
            lines.append(f"{where}: unknown parameter")
        else:
            lines.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(dict.fromkeys(lines)), param


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.envelope(), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return envelope_response(400, message, param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and message == "Not Found":
            message = "no such endpoint; see /docs for the API"
        return envelope_response(exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _crash(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return envelope_response(500, "internal server error")

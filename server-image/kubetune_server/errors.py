"""Errors the serving logic raises; the web layer turns each into one OpenAI-style error envelope."""

from __future__ import annotations


class ApiError(Exception):
    """A request failure with the HTTP status, OpenAI error type and code clients can branch on."""

    status_code = 400
    error_type = "invalid_request_error"
    code: str | None = None

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def envelope(self) -> dict:
        return error_envelope(self.message, self.error_type, self.param, self.code)


class InvalidRequest(ApiError):
    code = "invalid_value"


class ModelNotFound(ApiError):
    status_code = 404
    code = "model_not_found"


class Unauthorized(ApiError):
    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class NotReady(ApiError):
    status_code = 503
    error_type = "service_unavailable"
    code = "not_ready"


class EngineFailure(ApiError):
    status_code = 500
    error_type = "server_error"
    code = "generation_failed"


class UnsupportedModel(Exception):
    """The base model cannot be served by this engine (said at load, with the reason and the alternative)."""


class AdapterLoadError(Exception):
    """An adapter cannot be served (missing files, or trained on another base model)."""


def error_envelope(message: str, error_type: str, param: str | None = None, code: str | None = None) -> dict:
    """The one error body of every 4xx/5xx: `{"error": {"message", "type", "param", "code"}}`."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}

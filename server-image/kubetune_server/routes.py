"""HTTP routes: thin translations between FastAPI and `Serving` (auth, disconnects, SSE framing)."""

from __future__ import annotations

import asyncio
import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from kubetune.api.serving import ADAPTERS_PATH, ReplicaAdapters

from .errors import ApiError, ModelNotFound, Unauthorized
from .metrics import ServerMetrics
from .protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    ErrorResponse,
    GenerateRequest,
    GenerateResponse,
    ModelCard,
    ModelList,
)
from .serving import Serving

CLIENT_CLOSED = 499
ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 500, 503)}
_bearer = HTTPBearer(auto_error=False, description="The API key, when the server has one")


def api_key_guard(api_key: str | None):
    """A dependency that accepts any request when no key is set, else only 'Authorization: Bearer <key>'."""

    async def guard(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
        if api_key is None:
            return
        if credentials is None:
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        if not hmac.compare_digest(credentials.credentials.encode(), api_key.encode()):
            raise Unauthorized("invalid API key")

    return guard


class ClientGone(Exception):
    """The client closed the connection before the answer was ready."""


async def until_disconnect(request: Request, work):
    """Await `work`, cancelling it (and so its generation) if the client disconnects first."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    raise ClientGone


def _sse(events) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def openai_router(serving: Serving, api_key: str | None) -> APIRouter:
    router = APIRouter(dependencies=[Depends(api_key_guard(api_key))], responses=ERRORS)

    @router.get("/v1/models", response_model=ModelList, tags=["openai"])
    async def list_models() -> ModelList:
        return serving.list_models()

    @router.get("/v1/models/{model_id}", response_model=ModelCard, tags=["openai"])
    async def get_model(model_id: str) -> ModelCard:
        for card in serving.list_models().data:
            if card.id == model_id:
                return card
        known = ", ".join(card.id for card in serving.list_models().data)
        raise ModelNotFound(f"The model '{model_id}' does not exist; available models: {known}", param="model")

    @router.post("/v1/completions", response_model=CompletionResponse, tags=["openai"])
    async def completions(body: CompletionRequest, request: Request):
        if body.stream:
            return _sse(await serving.completion_stream(body))
        return await _answer(request, serving.completion(body))

    @router.post("/v1/chat/completions", response_model=ChatCompletionResponse, tags=["openai"])
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        if body.stream:
            return _sse(await serving.chat_stream(body))
        return await _answer(request, serving.chat(body))

    @router.post("/generate", response_model=GenerateResponse, tags=["compatibility"])
    async def generate(body: GenerateRequest, request: Request):
        """The seed tutorial's endpoint: `{question, max_tokens, temperature}` -> `{answer, tokens_used}`, plus the
        decoding controls (top_p, top_k, repetition/frequency/presence penalties)."""
        return await _answer(request, serving.generate(body))

    return router


async def _answer(request: Request, work):
    try:
        return await until_disconnect(request, work)
    except ClientGone:
        return Response(status_code=CLIENT_CLOSED)


def probes_router(serving: Serving, metrics: ServerMetrics) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/health")
    async def health() -> dict:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @router.get("/ready", responses={503: {"model": ErrorResponse}})
    async def ready():
        """Readiness: the base model and the configured adapters are loaded."""
        engine = serving.engine
        if not engine.ready:
            reason = engine.load_error or "the model is still loading"
            error = ApiError(reason)
            error.status_code, error.error_type, error.code = 503, "service_unavailable", "not_ready"
            return JSONResponse(error.envelope(), status_code=503)
        return {"status": "ready", "models": engine.model_names()}

    @router.get(
        ADAPTERS_PATH, response_model=ReplicaAdapters, response_model_exclude_none=True, response_model_by_alias=True
    )
    async def adapters() -> ReplicaAdapters:
        """Each adapter of the current serve.json as this replica serves it (loaded, loading, or refused and why).

        The operator reads it from every ready replica into the ModelServe's status. No API key, as /ready: it
        names adapters, their volumes and refusal reasons, never weights or prompts."""
        return serving.engine.adapter_report()

    @router.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    return router

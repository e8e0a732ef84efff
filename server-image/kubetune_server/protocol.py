"""Wire models of the OpenAI-compatible API and the tutorial's /generate, with hard bounds on every input.

The bounds here are the outer limits the schema advertises; the configured (tighter) limits of a deployment
are checked by the serving logic, which names the limit in its error.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_TEXT = 1_000_000
MAX_STOP = 4
MAX_N = 8
MAX_PROMPTS = 64

Text = Annotated[str, Field(max_length=MAX_TEXT)]
StopStrings = Annotated[str, Field(min_length=1, max_length=256)]


class Strict(BaseModel):
    """Request bodies: unknown fields are accepted and ignored.

    Clients send parameters of newer API versions or other servers (`logprobs`, `response_format`, vendor
    extensions); refusing them broke those clients, which is why vLLM reversed the same choice. Known fields keep
    their bounds.
    """

    model_config = ConfigDict(extra="ignore")


class StreamOptions(Strict):
    include_usage: bool = False


class SamplingFields(Strict):
    """Parameters shared by completions and chat completions."""

    model: Annotated[str, Field(min_length=1, max_length=256)]
    max_tokens: Annotated[int, Field(ge=1, le=32768)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    n: Annotated[int, Field(ge=1, le=MAX_N)] = 1
    stop: StopStrings | Annotated[list[StopStrings], Field(max_length=MAX_STOP)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    seed: Annotated[int, Field(ge=0, le=2**63 - 1)] | None = None
    user: Annotated[str, Field(max_length=256)] | None = None
    presence_penalty: Annotated[float, Field(ge=0, le=0)] | None = Field(
        default=None, description="Accepted for compatibility; only 0 is supported."
    )
    frequency_penalty: Annotated[float, Field(ge=0, le=0)] | None = Field(
        default=None, description="Accepted for compatibility; only 0 is supported."
    )

    def stop_strings(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


TokenIds = Annotated[list[Annotated[int, Field(ge=0, le=10_000_000)]], Field(min_length=1, max_length=131072)]


class CompletionRequest(SamplingFields):
    prompt: (
        Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]
        | Annotated[
            list[Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]], Field(min_length=1, max_length=MAX_PROMPTS)
        ]
        | TokenIds
    )


class TextPart(Strict):
    type: Literal["text"]
    text: Text


class ChatMessage(Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: Text | Annotated[list[TextPart], Field(min_length=1, max_length=64)]
    name: Annotated[str, Field(max_length=64)] | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(SamplingFields):
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=1024)]
    max_completion_tokens: Annotated[int, Field(ge=1, le=32768)] | None = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: str | None
    logprobs: None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: str | None
    logprobs: None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: Delta
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "kubetune"
    parent: str | None = None
    root: str | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class GenerateRequest(Strict):
    """The tutorial's request body, kept so its clients keep working; `model` picks an adapter (optional)."""

    question: Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]
    max_tokens: Annotated[int, Field(ge=1, le=32768)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    model: Annotated[str, Field(min_length=1, max_length=256)] | None = None


class GenerateResponse(BaseModel):
    answer: str
    tokens_used: int


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail

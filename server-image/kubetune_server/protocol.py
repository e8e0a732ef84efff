"""Wire models of the OpenAI-compatible API and the tutorial's /generate, with hard bounds on every input.

The bounds here are the outer limits the schema advertises; the configured (tighter) limits of a deployment
are checked by the serving logic, which names the limit in its error.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from kubetune.api.modelserve import MAX_REPETITION_PENALTY, MAX_TOP_K, MIN_REPETITION_PENALTY
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

MAX_TEXT = 1_000_000
MAX_STOP = 4
MAX_N = 8
MAX_PROMPTS = 64

Text = Annotated[str, Field(max_length=MAX_TEXT)]
StopStrings = Annotated[str, Field(min_length=1, max_length=256)]


def _ranged(kind: type, low: float, high: float | None, *, low_open: bool = False, note: str = ""):
    """A number type whose out-of-range values are refused with one message naming the whole allowed range
    (pydantic's own bound errors name only the bound that failed); the schema still advertises the bounds."""

    def number(bound: float) -> str:
        return str(int(bound)) if float(bound).is_integer() else str(bound)

    allowed = (
        f"a finite number {'greater than' if low_open else 'at least'} {number(low)}"
        if high is None
        else f"between {number(low)}{' (exclusive)' if low_open else ''} and {number(high)}"
    )

    def check(value):
        finite = not isinstance(value, float) or math.isfinite(value)
        if not finite or value < low or (low_open and value == low) or (high is not None and value > high):
            raise PydanticCustomError(
                "out_of_range",
                "must be {allowed}{note}, got {value}",
                {"allowed": allowed, "note": note, "value": value},
            )
        return value

    schema: dict = {"type": "integer" if kind is int else "number", "exclusiveMinimum" if low_open else "minimum": low}
    if high is not None:
        schema["maximum"] = high
    return Annotated[kind, AfterValidator(check), WithJsonSchema(schema)]


Penalty = _ranged(float, -2, 2, note=" (OpenAI's range)")
RepetitionPenalty = _ranged(float, MIN_REPETITION_PENALTY, MAX_REPETITION_PENALTY, note=" (1 is off)")
TopK = _ranged(int, -1, MAX_TOP_K, note=" (0 or -1 is off)")


class Strict(BaseModel):
    """Request bodies: unknown fields are accepted and ignored.

    Clients send parameters of newer API versions or other servers (`logprobs`, `response_format`, vendor
    extensions); refusing them broke those clients, which is why vLLM reversed the same choice. Known fields keep
    their bounds.
    """

    model_config = ConfigDict(extra="ignore")


class DecodingFields(Strict):
    """Decoding controls shared by every generating route; unset fields take the ModelServe's
    `spec.generation` defaults (off unless set there)."""

    top_k: TopK | None = Field(
        default=None, description="Sample among the k most likely tokens only (vLLM's extension); 0 or -1: off."
    )
    repetition_penalty: RepetitionPenalty | None = Field(
        default=None,
        description="Divide positive (multiply negative) logits of tokens already in the prompt or the answer by "
        "this (Hugging Face / vLLM); > 1 discourages repeats, 1 is off; 0.01 to 100.",
    )
    frequency_penalty: Penalty | None = Field(
        default=None,
        description="Subtract this times a token's count in the answer so far from its logit (OpenAI); -2 to 2.",
    )
    presence_penalty: Penalty | None = Field(
        default=None,
        description="Subtract this from the logit of every token already in the answer (OpenAI); -2 to 2.",
    )


class StreamOptions(Strict):
    include_usage: bool = False


class SamplingFields(DecodingFields):
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


class GenerateRequest(DecodingFields):
    """The tutorial's request body, kept so its clients keep working; `model` picks an adapter (optional). The
    decoding controls its generation chapter recommends (top_k, top_p, repetition_penalty) are accepted too."""

    question: Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]
    max_tokens: Annotated[int, Field(ge=1, le=32768)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
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

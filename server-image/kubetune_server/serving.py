"""Serving logic: OpenAI and /generate requests -> engine sequences -> responses or SSE events.

No web framework here; the routes only translate HTTP to these calls, which keeps this testable and
lets every limit be checked in one place with a message naming the parameter and the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from kubetune.api import GenerationSpec

from .engine import Engine
from .errors import EngineFailure, InvalidRequest, NotReady
from .metrics import ServerMetrics
from .protocol import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    DecodingFields,
    Delta,
    GenerateRequest,
    GenerateResponse,
    ModelCard,
    ModelList,
    Usage,
)
from .requests import Chunk, SequenceHandle
from .sampling import SamplingParams

GENERATE_PROMPT = "### Instruction:\n{question}\n\n### Response:\n"
"""/generate's prompt: the trainer's default alpaca layout without input, so adapters see what they learned."""

_OFF_LOOP_CHARS = 20_000


def leading_special_ids(tokenizer) -> list[int]:
    """The ids a tokenizer adds before a text with add_special_tokens (e.g. [BOS]); trailing ones (EOS) never."""
    cached = getattr(tokenizer, "_kubetune_leading_ids", None)
    if cached is not None:
        return cached
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    prefix = next((full[:i] for i in range(len(full) - len(bare) + 1) if full[i : i + len(bare)] == bare), [])
    with contextlib.suppress(AttributeError):  # a tokenizer that refuses attributes: computed each time
        tokenizer._kubetune_leading_ids = prefix
    return prefix


def choice_params(params: SamplingParams, index: int) -> SamplingParams:
    """The parameters of choice `index` of an n > 1 request: with a seed, each choice draws from seed + index
    (as vLLM does), so the n choices differ and each repeats on its own."""
    if params.seed is None or index == 0:
        return params
    return replace(params, seed=params.seed + index)


@dataclass
class Finished:
    text: str
    completion_tokens: int
    finish_reason: str


class Serving:
    """Turns validated requests into engine work, enforcing the deployment's generation limits."""

    def __init__(self, engine: Engine, metrics: ServerMetrics | None = None) -> None:
        self.engine = engine
        self.metrics = metrics
        self.started = int(time.time())

    @property
    def limits(self) -> GenerationSpec:
        return self.engine.config.generation

    # ----- models -----
    def list_models(self) -> ModelList:
        self._require_ready()
        names = self.engine.model_names()
        base = self.engine.base_name
        cards = [
            ModelCard(
                id=name,
                created=self.started,
                parent=None if name == base or name not in self.engine.adapter_folders() else base,
                root=self.engine.adapter_folders().get(name, self.engine.base_location.load_from),
            )
            for name in names
        ]
        return ModelList(data=cards)

    # ----- request checks -----
    def _require_ready(self) -> None:
        if not self.engine.ready:
            raise NotReady("the model is still loading; retry when /ready answers 200")

    def _sampling(
        self,
        max_tokens: int | None,
        temperature: float | None,
        top_p: float | None,
        stop,
        seed,
        decoding: DecodingFields,
    ) -> SamplingParams:
        """The request's parameters, each unset one taken from `spec.generation` (whose decoding controls are
        off when unset there too)."""
        limits = self.limits
        limit = limits.max_new_tokens_limit
        if max_tokens is not None and max_tokens > limit:
            raise InvalidRequest(
                f"max_tokens is {max_tokens}, but this server allows at most {limit} (maxNewTokensLimit)",
                param="max_tokens",
            )

        def pick(requested, default, off):
            return next((value for value in (requested, default) if value is not None), off)

        return SamplingParams(
            max_tokens=max_tokens or limits.max_new_tokens,
            temperature=pick(temperature, limits.temperature, 0.0),
            top_p=pick(top_p, limits.top_p, 1.0),
            stop=stop,
            seed=seed,
            top_k=max(0, pick(decoding.top_k, limits.top_k, 0)),  # -1 (vLLM's "off") is 0 here
            repetition_penalty=pick(decoding.repetition_penalty, limits.repetition_penalty, 1.0),
            frequency_penalty=pick(decoding.frequency_penalty, limits.frequency_penalty, 0.0),
            presence_penalty=pick(decoding.presence_penalty, limits.presence_penalty, 0.0),
        )

    async def _encode(self, text: str, leading_specials: bool = False) -> list[int]:
        """Token ids of `text`; with `leading_specials`, after the tokens the tokenizer puts before a text (BOS for
        Llama, Mistral and Gemma tokenizers), as training tokenised its text formats. Chat prompts come from the
        chat template, which writes its own BOS, so they go without."""
        tokenizer = self.engine.tokenizer
        if len(text) > _OFF_LOOP_CHARS:
            ids = await asyncio.to_thread(lambda: tokenizer(text, add_special_tokens=False)["input_ids"])
        else:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if not leading_specials:
            return ids
        prefix = leading_special_ids(tokenizer)
        return ids if ids[: len(prefix)] == prefix else prefix + ids

    def _check_prompt(self, ids: list[int], params: SamplingParams, param: str) -> None:
        if not ids:
            raise InvalidRequest("the prompt is empty after tokenization", param=param)
        if len(ids) > self.limits.max_prompt_tokens:
            raise InvalidRequest(
                f"the prompt has {len(ids)} tokens, but this server accepts at most "
                f"{self.limits.max_prompt_tokens} (maxPromptTokens)",
                param=param,
            )
        context = self.engine.context_length
        if len(ids) + params.max_tokens > context:
            raise InvalidRequest(
                f"the prompt ({len(ids)} tokens) plus max_tokens ({params.max_tokens}) exceeds the model's "
                f"context length of {context} tokens",
                param="max_tokens",
            )
        kv_budget = getattr(self.engine, "kv_budget", None)
        if kv_budget is not None and len(ids) + params.max_tokens > kv_budget:
            raise InvalidRequest(
                f"the prompt ({len(ids)} tokens) plus max_tokens ({params.max_tokens}) needs more KV cache than this "
                f"server has ({kv_budget} tokens: kvCacheTokens, or what the GPU's memory holds)",
                param="max_tokens",
            )
        vocabulary = len(self.engine.tokenizer)
        if max(ids) >= vocabulary:
            raise InvalidRequest(f"token id {max(ids)} is outside the vocabulary (0..{vocabulary - 1})", param=param)

    async def _prompt_ids(self, prompt: str | list) -> list[list[int]]:
        if isinstance(prompt, str):
            return [await self._encode(prompt, leading_specials=True)]
        if prompt and isinstance(prompt[0], int):
            return [list(prompt)]  # token ids are the client's, as given
        return [await self._encode(text, leading_specials=True) for text in prompt]

    def _chat_prompt(self, request: ChatCompletionRequest) -> str:
        tokenizer = self.engine.tokenizer
        if not getattr(tokenizer, "chat_template", None):
            raise InvalidRequest(
                f"model {request.model!r} has no chat template; use /v1/completions with a plain prompt",
                param="messages",
            )
        messages = [{"role": message.role, "content": message.text()} for message in request.messages]
        try:
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # jinja templates raise their own errors for unsupported conversations
            raise InvalidRequest(f"the chat template rejected these messages: {exc}", param="messages") from exc

    def _submit(
        self, prompts: list[list[int]], model: str, params: SamplingParams, n: int, stream: bool = False
    ) -> list[SequenceHandle]:
        handles: list[SequenceHandle] = []
        try:
            for ids in prompts:
                for index in range(n):
                    handles.append(self.engine.submit(ids, model, choice_params(params, index), stream))
        except BaseException:
            for handle in handles:
                handle.cancel()
            raise
        return handles

    # ----- running -----
    async def _collect(self, handle: SequenceHandle) -> Finished:
        parts = []
        async for chunk in handle.chunks():
            if chunk.error:
                raise EngineFailure(chunk.error)
            parts.append(chunk.text)
            if chunk.finish_reason:
                return Finished("".join(parts), chunk.completion_tokens, chunk.finish_reason)
        raise EngineFailure("generation ended without a result")

    async def _run_all(self, handles: list[SequenceHandle]) -> list[Finished]:
        try:
            return list(await asyncio.gather(*(self._collect(h) for h in handles)))
        finally:  # cancelled (client gone) or failed: stop the others' generation too
            for handle in handles:
                handle.cancel()

    def _usage(self, handles: list[SequenceHandle], completion_tokens: int, n: int) -> Usage:
        prompt_tokens = sum(h.prompt_tokens for h in handles[::n])
        if self.metrics is not None:
            self.metrics.count_tokens(handles[0].model, prompt_tokens, completion_tokens)
        return Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )

    async def _prepare_completion(self, request: CompletionRequest):
        self._require_ready()
        params = self._sampling(
            request.max_tokens, request.temperature, request.top_p, request.stop_strings(), request.seed, request
        )
        prompts = await self._prompt_ids(request.prompt)
        if len(prompts) * request.n > self.limits.max_batch_size * 4:
            raise InvalidRequest(
                f"{len(prompts)} prompts x n={request.n} is more than this server takes in one request "
                f"({self.limits.max_batch_size * 4})",
                param="n",
            )
        for ids in prompts:
            self._check_prompt(ids, params, "prompt")
        return self._submit(prompts, request.model, params, request.n, request.stream)

    async def completion(self, request: CompletionRequest) -> CompletionResponse:
        handles = await self._prepare_completion(request)
        results = await self._run_all(handles)
        choices = [CompletionChoice(index=i, text=r.text, finish_reason=r.finish_reason) for i, r in enumerate(results)]
        usage = self._usage(handles, sum(r.completion_tokens for r in results), request.n)
        return CompletionResponse(
            id=f"cmpl-{uuid.uuid4().hex}", created=int(time.time()), model=request.model, choices=choices, usage=usage
        )

    async def completion_stream(self, request: CompletionRequest) -> AsyncIterator[str]:
        """Checks run now (errors become HTTP errors); the returned iterator yields SSE events."""
        handles = await self._prepare_completion(request)
        ident, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())

        def event(index: int, chunk: Chunk) -> str | None:
            if not chunk.text and not chunk.finish_reason:
                return None
            body = CompletionResponse(
                id=ident,
                created=created,
                model=request.model,
                choices=[CompletionChoice(index=index, text=chunk.text, finish_reason=chunk.finish_reason)],
            )
            return body.model_dump_json(exclude_none=True)

        def usage_event(usage: Usage) -> str:
            return CompletionResponse(
                id=ident, created=created, model=request.model, choices=[], usage=usage
            ).model_dump_json()

        return self._stream(handles, request, event, usage_event, first=None)

    async def _prepare_chat(self, request: ChatCompletionRequest):
        self._require_ready()
        max_tokens = request.max_completion_tokens or request.max_tokens
        params = self._sampling(
            max_tokens, request.temperature, request.top_p, request.stop_strings(), request.seed, request
        )
        ids = await self._encode(self._chat_prompt(request))
        self._check_prompt(ids, params, "messages")
        return self._submit([ids], request.model, params, request.n, request.stream)

    async def chat(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        handles = await self._prepare_chat(request)
        results = await self._run_all(handles)
        choices = [
            ChatChoice(index=i, message=AssistantMessage(content=r.text), finish_reason=r.finish_reason)
            for i, r in enumerate(results)
        ]
        usage = self._usage(handles, sum(r.completion_tokens for r in results), request.n)
        return ChatCompletionResponse(
            id=f"chatcmpl-{uuid.uuid4().hex}",
            created=int(time.time()),
            model=request.model,
            choices=choices,
            usage=usage,
        )

    async def chat_stream(self, request: ChatCompletionRequest) -> AsyncIterator[str]:
        handles = await self._prepare_chat(request)
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        def chunk_json(choices: list[ChatChunkChoice], usage: Usage | None = None) -> str:
            body = ChatCompletionChunk(id=ident, created=created, model=request.model, choices=choices, usage=usage)
            return body.model_dump_json(exclude_none=True)

        def event(index: int, chunk: Chunk) -> str | None:
            if not chunk.text and not chunk.finish_reason:
                return None
            delta = Delta(content=chunk.text) if chunk.text else Delta()
            return chunk_json([ChatChunkChoice(index=index, delta=delta, finish_reason=chunk.finish_reason)])

        first = [
            chunk_json([ChatChunkChoice(index=i, delta=Delta(role="assistant", content=""))])
            for i in range(len(handles))
        ]
        return self._stream(handles, request, event, lambda usage: chunk_json([], usage), first=first)

    async def _stream(self, handles, request, event, usage_event, first: list[str] | None) -> AsyncIterator[str]:
        queue: asyncio.Queue[tuple[int, Chunk]] = asyncio.Queue()

        async def pump(index: int, handle: SequenceHandle) -> None:
            async for chunk in handle.chunks():
                await queue.put((index, chunk))

        tasks = [asyncio.create_task(pump(i, h)) for i, h in enumerate(handles)]
        try:
            for line in first or []:
                yield f"data: {line}\n\n"
            open_count, completion_tokens = len(handles), 0
            while open_count:
                index, chunk = await queue.get()
                if chunk.error:
                    error = EngineFailure(chunk.error).envelope()
                    yield f"data: {json.dumps(error)}\n\n"
                    return
                text = event(index, chunk)
                if text is not None:
                    yield f"data: {text}\n\n"
                if chunk.finish_reason:
                    open_count -= 1
                    completion_tokens += chunk.completion_tokens
            usage = self._usage(handles, completion_tokens, request.n)
            if request.stream_options is not None and request.stream_options.include_usage:
                yield f"data: {usage_event(usage)}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            for handle in handles:
                handle.cancel()
            for task in tasks:
                task.cancel()

    # ----- the tutorial's endpoint -----
    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        self._require_ready()
        model = request.model or self._default_generate_model()
        params = self._sampling(request.max_tokens, request.temperature, request.top_p, (), None, request)
        ids = await self._encode(GENERATE_PROMPT.format(question=request.question), leading_specials=True)
        self._check_prompt(ids, params, "question")
        handles = self._submit([ids], model, params, 1)
        (result,) = await self._run_all(handles)
        usage = self._usage(handles, result.completion_tokens, 1)
        return GenerateResponse(answer=result.text.strip(), tokens_used=usage.total_tokens)

    def _default_generate_model(self) -> str:
        """The tutorial served one fine-tuned model: the only adapter if there is exactly one, else the base."""
        names = self.engine.model_names()
        adapters = [name for name in names if name != self.engine.base_name]
        return adapters[0] if len(adapters) == 1 else names[0]

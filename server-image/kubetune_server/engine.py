"""The generation engine: base model + LoRA adapters, and a worker thread that decodes requests in batches.

Continuous batching: queued sequences are prefilled together and merged into the running batch between
decode steps; each step advances every row by one token with the KV cache, so rows stream as they go,
finish on their own eos/stop/max_tokens and leave the batch, and rows of different adapters share a forward
pass through PEFT's per-row `adapter_names`. Adapter changes are applied by the worker between steps.

Each worker step stays under a token budget (`generation.maxStepTokens`): the decode rows count one token
each, and a joining group's prompts are prefilled in chunks of what is left, so one long prompt delays the
running streams by a chunk per step instead of its whole prefill. Admission is bounded by rows and, when
`generation.kvCacheTokens` is set, by the KV cache the batch can grow to. A failed decode step rolls the cache
back and sheds the newest row (the one that most likely tipped it over, e.g. out of memory) instead of failing
the whole batch.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch
from kubetune.api import ServeConfig
from kubetune.api.runtime import resolve_pvc_path
from kubetune.api.serving import ReplicaAdapter, ReplicaAdapters

from . import batch as batching
from .adapters import BASE_ROW, AdapterSet, AdapterSource, merge_single_adapter
from .detokenize import TextProgress
from .errors import AdapterLoadError, ModelNotFound, NotReady, UnsupportedModel
from .kv_budget import gpu_kv_budget
from .loader import (
    BaseModelLocation,
    check_adapter_base,
    load_base_model,
    load_tokenizer,
    locate_base_model,
    pick_device,
    through_model_cache,
)
from .requests import Chunk, SequenceHandle
from .sampling import SamplingParams, TokenHistory, choose_next_tokens, make_generator

log = logging.getLogger(__name__)

MERGED_ROW = "__merged__"


def replica_adapters(
    wanted: list[AdapterSource],
    loaded: dict[str, str],
    refused: dict[str, str],
    reasons: dict[str, str],
    merged_name: str | None = None,
) -> ReplicaAdapters:
    """Each adapter asked for (on a volume), as one replica serves it: Loaded from that very folder, Refused (the
    reason) for that folder, else still Loading. With a merged adapter, only that one is served until a restart."""
    states = []
    for source in wanted:
        if source.pvc is None:
            continue
        state, message = "Loading", None
        if merged_name is not None:
            merged = source.name == merged_name
            state = "Loaded" if merged else "Refused"
            message = None if merged else "mergeAdapter is set: adapters change only with a restart"
        elif loaded.get(source.name) == source.path:
            state = "Loaded"
        elif refused.get(source.name) == source.path:
            state, message = "Refused", reasons.get(source.name)
        states.append(ReplicaAdapter(name=source.name, pvc=source.pvc, state=state, message=message))
    return ReplicaAdapters(adapters=states)


@dataclass
class _Row:
    """Worker-side state of one live sequence."""

    handle: SequenceHandle
    generator: torch.Generator | None
    text: TextProgress
    history: TokenHistory | None = None  # only for rows with penalties
    generated: list[int] = field(default_factory=list)
    unsent: str = ""

    @classmethod
    def joining(cls, handle: SequenceHandle) -> _Row:
        params = handle.params
        history = TokenHistory(handle.prompt_ids) if params.penalised else None
        return cls(handle, make_generator(params), TextProgress(params.stop), history)


@dataclass
class SyncReport:
    """Outcome of applying an adapter list: what changed and what was refused (name -> reason)."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


@dataclass
class EngineStats:
    """Live numbers for /metrics."""

    waiting: int = 0
    running: int = 0
    steps: int = 0
    prefill_chunks: int = 0


@dataclass
class _Prefill:
    """A group of admitted sequences whose left-padded prompts enter the cache a chunk of columns per step."""

    handles: list[SequenceHandle]
    ids: torch.Tensor  # [rows, width]
    mask: torch.Tensor  # [rows, width]
    positions: torch.Tensor  # [rows, width]
    cache: object
    done: int = 0  # columns already in the cache

    @property
    def width(self) -> int:
        return int(self.ids.shape[1])


def adapter_sources(config: ServeConfig, root: str | None = None) -> list[AdapterSource]:
    """The adapters of a ServeConfig with their folders resolved under the claim mount root."""
    return [
        AdapterSource(adapter.name, resolve_pvc_path(adapter.pvc, root), adapter.pvc) for adapter in config.adapters
    ]


def cache_argument(model) -> str:
    """The forward() keyword of the KV cache: `cache` in newer transformers, `past_key_values` before."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values"


class Engine:
    """Owns the model; `load()` once (blocking), then `start()` the worker; `submit()` from the event loop."""

    def __init__(
        self,
        config: ServeConfig,
        pvc_root: str | None = None,
        device: str | None = None,
        on_step: Callable[[int], None] | None = None,
        on_occupancy: Callable[[int, int], None] | None = None,
    ) -> None:
        self.config = config
        self.pvc_root = pvc_root
        self.device = device or pick_device()
        self.on_step = on_step  # rows of each forward pass
        self.on_occupancy = on_occupancy  # (running, waiting) whenever they may have changed
        self.tokenizer = None
        self.base_location: BaseModelLocation = locate_base_model(config.base_model, pvc_root)
        self.stats = EngineStats()
        self.load_error: str | None = None
        self._adapters: AdapterSet | None = None
        self._merged_name: str | None = None
        self._ready = threading.Event()
        self._cond = threading.Condition()
        self._waiting: deque[SequenceHandle] = deque()
        self._ops: deque[tuple[list[AdapterSource], Future]] = deque()
        self._rows: list[_Row] = []
        self._state: batching.BatchState | None = None
        self._prefilling: _Prefill | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.failed_adapters: dict[str, str] = {}  # name -> why it was refused
        self._refused_folders: dict[str, str] = {}  # name -> the folder that was refused
        self._wanted: list[AdapterSource] = adapter_sources(config, pvc_root)  # the serve.json last asked for
        self.kv_budget: int | None = None  # kvCacheTokens, else what the GPU's free memory holds after loading

    # ----- lifecycle -----
    @property
    def ready(self) -> bool:
        return self._ready.is_set() and not self._stopping

    def load(self) -> None:
        """Load tokenizer, base model and the configured adapters. A refused adapter (another base model, no
        adapter_config.json) is reported (GET /adapters, a 404 naming the reason) while the base and the other
        adapters serve, as when it is hot-added later: a replica started after the refusal (a scale-up, a restart)
        must not crash-loop where the running ones serve. With mergeAdapter the one adapter is the model, so its
        refusal raises AdapterLoadError."""
        started = time.monotonic()
        sources = adapter_sources(self.config, self.pvc_root)
        if self.config.merge_adapter:
            if len(sources) != 1:
                raise AdapterLoadError(f"mergeAdapter needs exactly one adapter, got {len(sources)}")
            self._check_base(sources[0])  # before the base loads: fail fast
        self.base_location = through_model_cache(self.base_location)
        self.tokenizer = load_tokenizer(self.base_location)
        model = load_base_model(self.base_location, self.config.quantization, self.device)
        if self.config.merge_adapter:
            model = merge_single_adapter(model, sources[0])
            self._merged_name = sources[0].name
            self._adapters = AdapterSet(model, merged=True)
        else:
            self._adapters = AdapterSet(model)
            for source in sources:
                try:
                    self._check_base(source)
                    self._adapters.add(source)
                except AdapterLoadError as exc:
                    self._refuse(source, exc)
        self._eos_ids = self._find_eos_ids(model)
        self._cache_arg = cache_argument(model)
        self._check_batchable()
        self.kv_budget = self.config.generation.kv_cache_tokens or gpu_kv_budget(model, self.device)
        if self.kv_budget is not None:
            log.info("admission: at most %d KV-cache tokens in the batch", self.kv_budget)
        self._ready.set()
        log.info("model ready in %.1f s: %s", time.monotonic() - started, ", ".join(self.model_names()))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="kubetune-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking requests, let queued and running ones finish (up to `timeout`), then end the worker."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("engine did not drain within %.0f s; cancelling what is left", timeout)
                with self._cond:
                    prefilling = self._prefilling.handles if self._prefilling else []
                    for handle in [*self._waiting, *prefilling, *(row.handle for row in self._rows)]:
                        handle.cancel()
                self._thread.join(5)

    # ----- models -----
    @property
    def base_name(self) -> str:
        return self.config.served_base_name

    @property
    def context_length(self) -> int:
        model_config = self._adapters.model.config if self._adapters else None
        return int(getattr(model_config, "max_position_embeddings", 0) or 0) or 1 << 30

    def model_names(self) -> list[str]:
        """Base first, then adapters, as clients may name them."""
        if self._adapters is None:
            return []
        if self._merged_name:
            return [self._merged_name]
        return [self.base_name, *sorted(self._adapters.names())]

    def retiring_adapters(self) -> list[str]:
        """Internal versions of removed or replaced adapters still in use by running rows."""
        return self._adapters.retiring() if self._adapters else []

    def adapter_folders(self) -> dict[str, str]:
        if self._adapters is None:
            return {}
        if self._merged_name:
            return {}
        return self._adapters.names()

    def adapter_report(self) -> ReplicaAdapters:
        """Each adapter of the serve.json last asked for, as this replica serves it (GET /adapters): loaded from
        that folder, still queued or loading, or refused with the reason."""
        merged = self._merged_name if self.ready else None
        return replica_adapters(
            self._wanted, self.adapter_folders(), self._refused_folders, self.failed_adapters, merged
        )

    def _row_key(self, model: str) -> str:
        assert self._adapters is not None
        if self._merged_name:
            if model == self._merged_name:
                return MERGED_ROW
        elif model == self.base_name:
            return BASE_ROW
        else:
            internal = self._adapters.internal_id(model)
            if internal:
                return internal
        known = ", ".join(self.model_names())
        hint = f" ({self.failed_adapters[model]})" if model in self.failed_adapters else ""
        raise ModelNotFound(f"The model '{model}' does not exist{hint}; available models: {known}", param="model")

    def submit(self, prompt_ids: list[int], model: str, params: SamplingParams, stream: bool = False) -> SequenceHandle:
        """Queue one sequence; must be called on the event loop that consumes its chunks.

        With `stream` the text arrives token by token; without, in one chunk at the end, which spares the
        event loop a cross-thread wake-up per token (measurable at low concurrency).
        """
        with self._cond:
            if not self.ready:
                raise NotReady("the model is not loaded yet" if not self._stopping else "the server is shutting down")
            handle = SequenceHandle(prompt_ids, model, self._row_key(model), params, stream)
            self._waiting.append(handle)
            self.stats.waiting = len(self._waiting)
            if self.on_occupancy:
                self.on_occupancy(self.stats.running, self.stats.waiting)
            self._cond.notify_all()
        return handle

    def sync_adapters(self, sources: list[AdapterSource]) -> Future:
        """Serve exactly `sources` from now on (added, replaced or removed between steps); resolves to a SyncReport."""
        future: Future = Future()
        with self._cond:
            self._wanted = list(sources)
            self._ops.append((sources, future))
            self._cond.notify_all()
        if self._thread is None or not self._thread.is_alive():
            self._apply_ops()
        return future

    # ----- worker -----
    def _work(self) -> None:
        while True:
            self._apply_ops()  # before admitting, so a version in use by a row about to join is never collected
            with self._cond:
                idle = not self._waiting and self._state is None and self._prefilling is None
                if idle and self._stopping:
                    break
                if idle:
                    self._publish_occupancy()
                    if not self._ops:
                        self._cond.wait(timeout=0.5)
                    continue
                admitted = self._admit() if self._prefilling is None else []
            if admitted:
                try:
                    self._start_prefill(admitted)
                except Exception as exc:  # fails only the joining rows; the running batch is untouched
                    log.exception("prefill failed")
                    self._fail(admitted, f"generation failed: {type(exc).__name__}")
            if self._prefilling is not None:
                group = self._prefilling
                try:
                    self._prefill_chunk(self.step_budget - len(self._rows))
                except Exception as exc:
                    log.exception("prefill failed")
                    self._prefilling = None
                    self._fail(group.handles, f"generation failed: {type(exc).__name__}")
            if self._state is not None:
                try:
                    self._decode()
                except Exception as exc:  # a failed forward fails its newest row, never the worker
                    log.exception("decode step failed with %d rows", len(self._rows))
                    self._shed_newest(f"generation failed: {type(exc).__name__}")
            self._publish_occupancy()
        self._apply_ops()

    @property
    def step_budget(self) -> int:
        """Most tokens one worker step feeds the model (decode rows + a prefill chunk)."""
        return self.config.generation.max_step_tokens

    def _publish_occupancy(self) -> None:
        self.stats.running = len(self._rows) + (len(self._prefilling.handles) if self._prefilling else 0)
        self.stats.waiting = len(self._waiting)
        if self.on_occupancy:
            self.on_occupancy(self.stats.running, self.stats.waiting)

    def _kv_need(self, handles: list[SequenceHandle]) -> int:
        """Worst-case KV tokens of a left-padded batch of `handles`: rows x the longest prompt + max_tokens."""
        if not handles:
            return 0
        return len(handles) * max(h.prompt_tokens + h.params.max_tokens for h in handles)

    def _admit(self) -> list[SequenceHandle]:
        room = self.config.generation.max_batch_size - len(self._rows)
        budget = self.kv_budget
        members = [row.handle for row in self._rows]
        admitted: list[SequenceHandle] = []
        while self._waiting and room > 0:
            handle = self._waiting[0]
            if handle.cancelled:
                self._waiting.popleft()
                handle.push(Chunk("", 0, "cancelled"))
                continue
            if budget is not None and (members or admitted) and self._kv_need([*members, *admitted, handle]) > budget:
                break  # waits until finished rows free their cache
            admitted.append(self._waiting.popleft())
            room -= 1
        self.stats.waiting = len(self._waiting)
        return admitted

    def _apply_ops(self) -> None:
        with self._cond:
            ops = list(self._ops)
            self._ops.clear()
        for sources, future in ops:
            future.set_result(self._sync(sources))
        if self._adapters is not None:
            with self._cond:
                in_use = {row.handle.row_key for row in self._rows} | {h.row_key for h in self._waiting}
                if self._prefilling is not None:
                    in_use |= {h.row_key for h in self._prefilling.handles}
            self._adapters.collect(in_use)

    def _sync(self, sources: list[AdapterSource]) -> SyncReport:
        report = SyncReport()
        if self._adapters is None:
            report.failed = {s.name: "the model is not loaded yet" for s in sources}
            return report
        if self._merged_name:
            wanted = [s.name for s in sources]
            if wanted != [self._merged_name]:
                report.failed = {name: "mergeAdapter is set: adapters change only with a restart" for name in wanted}
            return report
        current = self._adapters.names()
        wanted = {s.name: s for s in sources}
        for name in sorted(set(current) - set(wanted)):
            self._adapters.remove(name)
            report.removed.append(name)
        for name in set(self.failed_adapters) - set(wanted):
            self.failed_adapters.pop(name, None)
            self._refused_folders.pop(name, None)
        for name, source in wanted.items():
            if current.get(name) == source.path:
                continue
            try:
                self._check_base(source)
                self._adapters.add(source)
            except AdapterLoadError as exc:
                self._refuse(source, exc)
                report.failed[name] = str(exc)
                continue
            self.failed_adapters.pop(name, None)
            self._refused_folders.pop(name, None)
            report.added.append(name)
        return report

    def _check_base(self, source: AdapterSource) -> None:
        check_adapter_base(
            source.name, source.path, self.base_location, self.config.ignore_base_mismatch, self.pvc_root
        )

    def _refuse(self, source: AdapterSource, exc: AdapterLoadError) -> None:
        log.error("adapter %r refused: %s", source.name, exc)
        self.failed_adapters[source.name] = str(exc)
        self._refused_folders[source.name] = source.path

    def _forward(self, row_keys: list[str], **inputs) -> torch.Tensor:
        assert self._adapters is not None
        if self._adapters.peft_active:
            self._adapters.route(row_keys)
        with torch.inference_mode():
            output = self._adapters.model(**inputs, use_cache=True, logits_to_keep=1)
        return output.logits[:, -1, :]

    def _new_cache(self):
        """A cache of plain full-length layers, also for sliding-window models (Mistral, Gemma 2/3).

        transformers' sliding-window layers keep only the last `window` columns and cannot be merged or trimmed
        row by row; full layers can, and the model still masks each layer to its window (from the columns, which
        stay contiguous per row), so answers are those of a sliding-window cache at the cost of keeping the
        older keys.
        """
        from transformers import DynamicCache

        return DynamicCache()

    def _check_batchable(self) -> None:
        """Refuse at load, with the reason, a model whose cache the batching cannot merge and trim."""
        assert self._adapters is not None and self.tokenizer is not None
        cache = self._new_cache()
        ids = torch.tensor([[self.tokenizer.pad_token_id or 0] * 2], dtype=torch.long, device=self.device)
        try:
            with torch.inference_mode():
                self._adapters.model(input_ids=ids, use_cache=True, logits_to_keep=1, **{self._cache_arg: cache})
            batching.check_cache(cache)
        except TypeError as exc:
            architecture = type(self._adapters.model).__name__
            raise UnsupportedModel(
                f"{architecture} cannot be served by the transformers engine: {exc}; serve it with engine: vllm"
            ) from exc

    def _start_prefill(self, handles: list[SequenceHandle]) -> None:
        ids, mask = batching.left_pad([h.prompt_ids for h in handles], self.tokenizer.pad_token_id, self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        self._prefilling = _Prefill(handles, ids, mask, positions, self._new_cache())

    def _prefill_chunk(self, budget: int) -> None:
        """Feed the joining group its next columns (at least one, at most `budget` tokens over all its rows);
        after the last, sample its first tokens and merge it into the running batch."""
        group = self._prefilling
        assert group is not None
        rows = len(group.handles)
        end = min(group.width, group.done + max(1, budget // rows))
        logits = self._forward(
            [h.row_key for h in group.handles],
            input_ids=group.ids[:, group.done : end],
            attention_mask=group.mask[:, :end],
            position_ids=group.positions[:, group.done : end],
            **{self._cache_arg: group.cache},
        )
        group.done = end
        self.stats.prefill_chunks += 1
        if end < group.width:
            return
        self._prefilling = None
        handles = group.handles
        rows_ = [_Row.joining(h) for h in handles]
        tokens = choose_next_tokens(
            logits, [h.params for h in handles], [r.generator for r in rows_], [r.history for r in rows_]
        )
        joining = batching.BatchState(
            cache=group.cache,
            attention_mask=group.mask,
            next_positions=group.positions[:, -1] + 1,
            next_tokens=torch.tensor(tokens, dtype=torch.long, device=self.device),
        )
        self._state = batching.merge(self._state, joining)
        self._rows.extend(rows_)
        self._after_step(tokens)

    def _decode(self) -> None:
        state = self._state
        assert state is not None
        mask = torch.nn.functional.pad(state.attention_mask, (0, 1), value=1)
        length = state.length
        try:
            logits = self._forward(
                [row.handle.row_key for row in self._rows],
                input_ids=state.next_tokens[:, None],
                attention_mask=mask,
                position_ids=state.next_positions[:, None],
                **{self._cache_arg: state.cache},
            )
            tokens = choose_next_tokens(
                logits,
                [row.handle.params for row in self._rows],
                [row.generator for row in self._rows],
                [row.history for row in self._rows],
            )
        except Exception:
            batching.truncate(state.cache, length)  # layers that already took this step's column give it back
            raise
        state.attention_mask = mask
        state.next_positions = state.next_positions + 1
        state.next_tokens = torch.tensor(tokens, dtype=torch.long, device=self.device)
        self._after_step(tokens)

    def _after_step(self, tokens: list[int]) -> None:
        """Hand the rows that just got a token (the last `len(tokens)`) its text; drop finished or cancelled rows."""
        self.stats.steps += 1
        if self.on_step:
            self.on_step(len(tokens))
        offset = len(self._rows) - len(tokens)
        keep = list(range(offset))
        for index in range(offset, len(self._rows)):
            row = self._rows[index]
            if row.handle.cancelled:
                row.handle.push(Chunk("", len(row.generated), "cancelled"))
            elif self._advance(row, tokens[index - offset]):
                keep.append(index)
        if len(keep) != len(self._rows):
            self._rows = [self._rows[i] for i in keep]
            self._state = batching.keep_rows(self._state, keep)
        self._publish_occupancy()

    def _advance(self, row: _Row, token: int) -> bool:
        """Add `token` to `row`; True while the row goes on."""
        params = row.handle.params
        finish = None
        if row.history is not None:
            row.history.add(token)
        if token in self._eos_ids:
            finish = "stop"
        else:
            row.generated.append(token)
        if finish is None and len(row.generated) >= params.max_tokens:
            finish = "length"
        text = self.tokenizer.decode(row.generated, skip_special_tokens=True)
        delta = row.text.advance(text, final=finish is not None)
        if row.text.stopped_by_string:
            finish = "stop"
        row.unsent += delta
        if finish is not None or (row.handle.stream and row.unsent):
            counted = len(row.generated) + (1 if token in self._eos_ids else 0)
            row.handle.push(Chunk(row.unsent, counted, finish))
            row.unsent = ""
        return finish is None

    def _shed_newest(self, message: str) -> None:
        """After a failed decode step (cache rolled back): fail the newest row only; the others retry next step.

        The newest row grew the batch last, so it is the likeliest cause of an out-of-memory step; a failure
        that every row would meet ends one row per step, so the loop still ends.
        """
        newest = self._rows[-1]
        self._fail([newest.handle], message)
        self._rows = self._rows[:-1]
        self._state = batching.keep_rows(self._state, list(range(len(self._rows))))
        self._publish_occupancy()

    def _fail(self, handles: list[SequenceHandle], message: str) -> None:
        """Tell the handles' clients about a failure; cancelling also drops them if they already joined the batch."""
        for handle in handles:
            handle.push(Chunk("", 0, "error", error=message))
            handle.cancel()

    def _find_eos_ids(self, model) -> set[int]:
        ids: set[int] = set()
        configured = getattr(model.generation_config, "eos_token_id", None)
        if isinstance(configured, int):
            ids.add(configured)
        elif configured:
            ids.update(configured)
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

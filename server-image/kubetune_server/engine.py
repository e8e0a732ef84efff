"""The generation engine: base model + LoRA adapters, and a worker thread that decodes requests in batches.

Continuous batching: queued sequences are prefilled together and merged into the running batch between
decode steps; each step advances every row by one token with the KV cache, so rows stream as they go,
finish on their own eos/stop/max_tokens and leave the batch, and rows of different adapters share a forward
pass through PEFT's per-row `adapter_names`. Adapter changes are applied by the worker between steps.
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
from .errors import AdapterLoadError, ModelNotFound, NotReady
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
from .sampling import SamplingParams, choose_next_tokens, make_generator

log = logging.getLogger(__name__)

MERGED_ROW = "__merged__"


@dataclass
class _Row:
    """Worker-side state of one live sequence."""

    handle: SequenceHandle
    generator: torch.Generator | None
    text: TextProgress
    generated: list[int] = field(default_factory=list)
    unsent: str = ""


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
        on_step: Callable[[int, int], None] | None = None,
    ) -> None:
        self.config = config
        self.pvc_root = pvc_root
        self.device = device or pick_device()
        self.on_step = on_step
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
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.failed_adapters: dict[str, str] = {}  # name -> why it was refused
        self._refused_folders: dict[str, str] = {}  # name -> the folder that was refused
        self._wanted: list[AdapterSource] = adapter_sources(config, pvc_root)  # the serve.json last asked for

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
                    for handle in [*self._waiting, *(row.handle for row in self._rows)]:
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
        folders = self.adapter_folders()
        states = []
        for source in self._wanted:
            if source.pvc is None:
                continue
            state, message = "Loading", None
            if self._merged_name is not None and self.ready:
                merged = source.name == self._merged_name
                state = "Loaded" if merged else "Refused"
                message = None if merged else "mergeAdapter is set: adapters change only with a restart"
            elif folders.get(source.name) == source.path:
                state = "Loaded"
            elif self._refused_folders.get(source.name) == source.path:
                state, message = "Refused", self.failed_adapters.get(source.name)
            states.append(ReplicaAdapter(name=source.name, pvc=source.pvc, state=state, message=message))
        return ReplicaAdapters(adapters=states)

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
                idle = not self._waiting and self._state is None
                if idle and self._stopping:
                    break
                if idle:
                    if not self._ops:
                        self._cond.wait(timeout=0.5)
                    continue
                admitted = self._admit()
            if admitted:
                try:
                    self._prefill(admitted)
                except Exception as exc:  # fails only the joining rows; the running batch is untouched
                    log.exception("prefill failed")
                    self._fail(admitted, f"generation failed: {type(exc).__name__}")
            if self._state is not None:
                try:
                    self._decode()
                except Exception as exc:  # a failed forward fails its rows, never the worker
                    log.exception("decode step failed")
                    self._fail([row.handle for row in self._rows], f"generation failed: {type(exc).__name__}")
                    self._rows, self._state, self.stats.running = [], None, 0
        self._apply_ops()

    def _admit(self) -> list[SequenceHandle]:
        room = self.config.generation.max_batch_size - len(self._rows)
        admitted = []
        while self._waiting and room > 0:
            handle = self._waiting.popleft()
            if handle.cancelled:
                handle.push(Chunk("", 0, "cancelled"))
                continue
            admitted.append(handle)
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

    def _prefill(self, handles: list[SequenceHandle]) -> None:
        from transformers import DynamicCache

        ids, mask = batching.left_pad([h.prompt_ids for h in handles], self.tokenizer.pad_token_id, self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self._adapters.model.config)
        logits = self._forward(
            [h.row_key for h in handles],
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            **{self._cache_arg: cache},
        )
        rows = [_Row(h, make_generator(h.params), TextProgress(h.params.stop)) for h in handles]
        tokens = choose_next_tokens(logits, [h.params for h in handles], [r.generator for r in rows])
        joining = batching.BatchState(
            cache=cache,
            attention_mask=mask,
            next_positions=positions[:, -1] + 1,
            next_tokens=torch.tensor(tokens, dtype=torch.long, device=self.device),
        )
        self._state = batching.merge(self._state, joining)
        self._rows.extend(rows)
        self._after_step(tokens)

    def _decode(self) -> None:
        state = self._state
        assert state is not None
        mask = torch.nn.functional.pad(state.attention_mask, (0, 1), value=1)
        logits = self._forward(
            [row.handle.row_key for row in self._rows],
            input_ids=state.next_tokens[:, None],
            attention_mask=mask,
            position_ids=state.next_positions[:, None],
            **{self._cache_arg: state.cache},
        )
        tokens = choose_next_tokens(
            logits, [row.handle.params for row in self._rows], [r.generator for r in self._rows]
        )
        state.attention_mask = mask
        state.next_positions = state.next_positions + 1
        state.next_tokens = torch.tensor(tokens, dtype=torch.long, device=self.device)
        self._after_step(tokens)

    def _after_step(self, tokens: list[int]) -> None:
        """Hand the rows that just got a token (the last `len(tokens)`) its text; drop finished or cancelled rows."""
        self.stats.steps += 1
        if self.on_step:
            self.on_step(len(self._rows), len(self._waiting))
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
        self.stats.running = len(self._rows)

    def _advance(self, row: _Row, token: int) -> bool:
        """Add `token` to `row`; True while the row goes on."""
        params = row.handle.params
        finish = None
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

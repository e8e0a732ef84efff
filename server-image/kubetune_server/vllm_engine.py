"""The vLLM engine: vLLM's AsyncLLM (paged KV cache, continuous batching, chunked prefill, CUDA graphs, batched
multi-LoRA kernels) behind kubetune's server, in place of the transformers engine.

It offers the transformers engine's interface (`submit` -> SequenceHandle, `sync_adapters`, `model_names`, ...),
so the OpenAI routes, /generate, the limits, the API key, the error envelope, the metrics and the serve.json
watcher stay one implementation for both engines. Adapters map onto vLLM's LoRA requests: each load gets a new
LoRA id (as the transformers engine versions PEFT names), so a replaced or removed adapter stays in vLLM until the
last request using it has finished, while new requests already see the change.

vLLM is imported only here and only when this engine is chosen: the default server image does not have it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import torch
from kubetune.api import ServeConfig
from kubetune.api.serving import ReplicaAdapters

from .adapters import AdapterSource
from .engine import EngineStats, SyncReport, adapter_sources, replica_adapters
from .errors import AdapterLoadError, ModelNotFound, NotReady, UnsupportedModel
from .kv_budget import kv_bytes_per_token
from .loader import (
    ADAPTER_CONFIG,
    BaseModelLocation,
    check_adapter_base,
    load_tokenizer,
    locate_base_model,
    through_model_cache,
)
from .requests import Chunk, SequenceHandle
from .sampling import SamplingParams

log = logging.getLogger(__name__)

CPU_KV_CACHE_FLOOR = 64 << 20
"""Least KV cache on CPU; without a size vLLM's CPU backend takes most of the host's memory."""


@dataclass(frozen=True)
class _Lora:
    """One loaded adapter version: the vLLM LoRA id clients' requests carry while it is current."""

    name: str
    path: str
    lora_id: int


class _VllmHandle(SequenceHandle):
    """A sequence whose cancel also cancels the task consuming vLLM's output, which aborts the request."""

    task: asyncio.Task | None = None

    def cancel(self) -> None:
        super().cancel()
        task = self.task
        if task is not None and not task.done():
            self._loop.call_soon_threadsafe(task.cancel)


def _adapter_rank(path: str) -> int:
    try:
        return int(json.loads((Path(path) / ADAPTER_CONFIG).read_text(encoding="utf-8")).get("r") or 0)
    except (OSError, ValueError) as exc:
        raise AdapterLoadError(f"{path}/{ADAPTER_CONFIG} cannot be read: {exc}") from exc


class VllmEngine:
    """Owns a vLLM AsyncLLM; `load()` once (blocking, any thread), then requests from the server's event loop."""

    name = "vllm"

    def __init__(self, config: ServeConfig, pvc_root: str | None = None, device: str | None = None) -> None:
        if config.merge_adapter:
            raise UnsupportedModel(
                "mergeAdapter is a transformers-engine setting; vLLM serves adapters unmerged through its LoRA "
                "kernels at close to base speed: remove mergeAdapter or use engine: transformers"
            )
        self.config = config
        self.pvc_root = pvc_root
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.base_location: BaseModelLocation = locate_base_model(config.base_model, pvc_root)
        self.tokenizer = None
        self.stats = EngineStats()
        self.load_error: str | None = None
        self.failed_adapters: dict[str, str] = {}  # name -> why it was refused
        self._refused_folders: dict[str, str] = {}  # name -> the folder that was refused
        self._wanted: list[AdapterSource] = adapter_sources(config, pvc_root)  # the serve.json last asked for
        self.on_step = None
        self.on_occupancy = None
        self.llm = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._current: dict[str, _Lora] = {}
        self._retired: dict[int, _Lora] = {}
        self._in_use: dict[int, int] = {}
        self._next_id = 0
        self._context = 0
        self._ready = threading.Event()
        self._stopping = False
        self._tasks: set[asyncio.Task] = set()

    # ----- lifecycle -----
    @property
    def ready(self) -> bool:
        return self._ready.is_set() and not self._stopping

    def attach_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """The server's event loop: vLLM's output handler and adapter operations run on it."""
        self.loop = loop

    def engine_args(self):
        from vllm.engine.arg_utils import AsyncEngineArgs

        spec, generation = self.config.vllm, self.config.generation
        dtype = spec.dtype
        if dtype == "auto":
            dtype = "auto" if self.device == "cuda" else "float32"
        kwargs: dict = {
            "model": self.base_location.load_from,
            "revision": self.base_location.revision,
            "trust_remote_code": self.base_location.trust_remote_code,
            "served_model_name": [self.base_name],
            "dtype": dtype,
            "enable_lora": True,
            "max_lora_rank": spec.max_lora_rank,
            "max_loras": spec.max_loras,
            "max_cpu_loras": max(spec.max_loras, len(self.config.adapters) + 2),
            "max_num_seqs": generation.max_batch_size,
            "max_model_len": spec.max_model_len,
            "enforce_eager": spec.enforce_eager,
            "disable_log_stats": False,
        }
        if self.device == "cuda":
            kwargs["gpu_memory_utilization"] = spec.gpu_memory_utilization
            kwargs["tensor_parallel_size"] = max(1, torch.cuda.device_count())
        if self.config.quantization is not None:
            if self.config.quantization.bits != 4:
                raise UnsupportedModel("the vLLM engine quantizes with bitsandbytes in 4 bits only; set bits: 4")
            kwargs["quantization"] = "bitsandbytes"
        kv_bytes = self._kv_cache_bytes(dtype)
        if kv_bytes is not None:
            kwargs["kv_cache_memory_bytes"] = kv_bytes
        return AsyncEngineArgs(**kwargs)

    def _kv_cache_bytes(self, dtype: str) -> int | None:
        """kvCacheTokens in bytes. On CPU without it: room for maxBatchSize sequences of the longest request the
        limits allow (maxPromptTokens + maxNewTokensLimit), at most a quarter of the host's memory; vLLM's CPU
        backend would otherwise take most of it."""
        tokens = self.config.generation.kv_cache_tokens
        if tokens is None and self.device == "cuda":
            return None  # vLLM sizes it from gpuMemoryUtilization
        config_file = Path(self.base_location.load_from) / "config.json"
        model_config = json.loads(config_file.read_text()) if config_file.is_file() else {}
        torch_dtype = torch.float32 if dtype in ("float32", "auto") and self.device != "cuda" else torch.bfloat16
        per_token = kv_bytes_per_token(model_config, torch_dtype) or 1 << 16
        if tokens is not None:
            return max(CPU_KV_CACHE_FLOOR, tokens * per_token)
        generation = self.config.generation
        wanted = generation.max_batch_size * (generation.max_prompt_tokens + generation.max_new_tokens_limit)
        host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return max(CPU_KV_CACHE_FLOOR, min(wanted * per_token, host // 4))

    def load(self) -> None:
        """Start vLLM's engine (its core process loads the model) and check the configured adapters."""
        from vllm.v1.engine.async_llm import AsyncLLM

        os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
        started = time.monotonic()
        self.base_location = through_model_cache(self.base_location)
        if self.base_location.local_only:  # in the shared model cache: vLLM's engine process must not ask the Hub
            os.environ["HF_HUB_OFFLINE"] = "1"
        self.tokenizer = load_tokenizer(self.base_location)
        self.llm = AsyncLLM.from_engine_args(self.engine_args())
        self._context = int(self.llm.model_config.max_model_len)
        for source in self._wanted:  # vLLM loads an adapter on its first request (or on a hot add, at once)
            try:
                self._register(source)
            except AdapterLoadError as exc:  # refused, the others and the base are served (GET /adapters says why)
                self._refuse(source, exc)
        self._ready.set()
        log.info("vLLM engine ready in %.1f s: %s", time.monotonic() - started, ", ".join(self.model_names()))

    def start(self) -> None:
        """Nothing to start: vLLM's core runs in its own process and its output handler on the event loop."""

    def stop(self, timeout: float = 30.0) -> None:
        """Refuse new requests, let running ones finish (up to `timeout`), then shut vLLM down."""
        self._stopping = True
        deadline = time.monotonic() + timeout
        while self._tasks and time.monotonic() < deadline:
            time.sleep(0.05)
        for task in list(self._tasks):
            if self.loop is not None:
                self.loop.call_soon_threadsafe(task.cancel)
        if self.llm is not None:
            self.llm.shutdown()

    # ----- models -----
    @property
    def base_name(self) -> str:
        return self.config.served_base_name

    @property
    def context_length(self) -> int:
        return self._context or 1 << 30

    def model_names(self) -> list[str]:
        if not self._ready.is_set():
            return []
        return [self.base_name, *sorted(self._current)]

    def adapter_folders(self) -> dict[str, str]:
        return {name: lora.path for name, lora in self._current.items()}

    def adapter_report(self) -> ReplicaAdapters:
        """Each adapter of the serve.json last asked for, as this replica serves it (GET /adapters)."""
        return replica_adapters(self._wanted, self.adapter_folders(), self._refused_folders, self.failed_adapters)

    def _refuse(self, source: AdapterSource, exc: Exception) -> None:
        log.error("adapter %r refused: %s", source.name, exc)
        self.failed_adapters[source.name] = str(exc)
        self._refused_folders[source.name] = source.path

    def retiring_adapters(self) -> list[str]:
        return sorted(f"{lora.name}--v{lora.lora_id}" for lora in self._retired.values())

    def _lora_for(self, model: str):
        from vllm.lora.request import LoRARequest

        if model == self.base_name:
            return None
        lora = self._current.get(model)
        if lora is None:
            known = ", ".join(self.model_names())
            hint = f" ({self.failed_adapters[model]})" if model in self.failed_adapters else ""
            raise ModelNotFound(f"The model '{model}' does not exist{hint}; available models: {known}", param="model")
        return LoRARequest(lora.name, lora.lora_id, lora.path)

    # ----- requests -----
    def submit(self, prompt_ids: list[int], model: str, params: SamplingParams, stream: bool = False) -> SequenceHandle:
        """Start one sequence in vLLM; must be called on the server's event loop."""
        if not self.ready:
            raise NotReady("the model is not loaded yet" if not self._stopping else "the server is shutting down")
        lora = self._lora_for(model)
        handle = _VllmHandle(prompt_ids, model, lora.lora_name if lora else "", params, stream)
        self.loop = self.loop or asyncio.get_running_loop()
        task = asyncio.ensure_future(self._run(handle, lora))
        handle.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return handle

    def _sampling(self, params: SamplingParams):
        from vllm import SamplingParams as VllmSampling
        from vllm.sampling_params import RequestOutputKind

        return VllmSampling(
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k,  # 0: off, as in vLLM
            repetition_penalty=params.repetition_penalty,
            frequency_penalty=params.frequency_penalty,
            presence_penalty=params.presence_penalty,
            seed=params.seed,
            stop=list(params.stop) or None,
            output_kind=RequestOutputKind.DELTA,
            skip_special_tokens=True,
        )

    async def _run(self, handle: _VllmHandle, lora) -> None:
        lora_id = lora.lora_int_id if lora else 0
        self._in_use[lora_id] = self._in_use.get(lora_id, 0) + 1
        self.stats.waiting += 1
        self._publish()
        started, text, tokens = False, [], 0
        try:
            generator = self.llm.generate(
                {"prompt_token_ids": handle.prompt_ids},
                self._sampling(handle.params),
                f"kt-{uuid.uuid4().hex}",
                lora_request=lora,
            )
            async for output in generator:
                if not started:
                    started = True
                    self.stats.waiting -= 1
                    self.stats.running += 1
                    self._publish()
                completion = output.outputs[0]
                tokens += len(completion.token_ids)
                finish = completion.finish_reason
                if finish == "abort":
                    finish = "cancelled"
                text.append(completion.text)
                if handle.stream or finish is not None:
                    handle.push(Chunk("".join(text), tokens, finish))
                    text = []
                self.stats.steps += 1
        except asyncio.CancelledError:
            handle.push(Chunk("", tokens, "cancelled"))
        except Exception as exc:  # vLLM refused or failed this request: only this one fails
            log.exception("vLLM request failed")
            handle.push(Chunk("", tokens, "error", error=f"generation failed: {type(exc).__name__}: {exc}"))
        finally:
            if started:
                self.stats.running -= 1
            else:
                self.stats.waiting -= 1
            self._publish()
            self._in_use[lora_id] -= 1
            if lora_id in self._retired and not self._in_use[lora_id]:
                await self._unload(lora_id)

    def _publish(self) -> None:
        if self.on_occupancy:
            self.on_occupancy(self.stats.running, self.stats.waiting)

    # ----- adapters -----
    def _register(self, source: AdapterSource) -> _Lora:
        """Check an adapter (base model, rank) and make it current under a new LoRA id."""
        check_adapter_base(
            source.name, source.path, self.base_location, self.config.ignore_base_mismatch, self.pvc_root
        )
        rank = _adapter_rank(source.path)
        if rank > self.config.vllm.max_lora_rank:
            raise AdapterLoadError(
                f"adapter {source.name!r} has LoRA rank {rank}, above vllm.maxLoraRank "
                f"({self.config.vllm.max_lora_rank}); raise maxLoraRank to serve it"
            )
        self._next_id += 1
        lora = _Lora(source.name, source.path, self._next_id)
        previous = self._current.get(source.name)
        if previous is not None:
            self._retired[previous.lora_id] = previous
        self._current = {**self._current, source.name: lora}
        return lora

    def sync_adapters(self, sources: list[AdapterSource]) -> Future:
        """Serve exactly `sources` from now on; resolves to a SyncReport (callable from any thread)."""
        self._wanted = list(sources)
        if self.loop is None or not self.loop.is_running():
            future: Future = Future()
            future.set_result(SyncReport(failed={s.name: "the server is not running yet" for s in sources}))
            return future
        return asyncio.run_coroutine_threadsafe(self._sync(sources), self.loop)

    async def _sync(self, sources: list[AdapterSource]) -> SyncReport:
        from vllm.lora.request import LoRARequest

        report = SyncReport()
        wanted = {s.name: s for s in sources}
        for name in sorted(set(self._current) - set(wanted)):
            lora = self._current[name]
            self._current = {key: value for key, value in self._current.items() if key != name}
            self._retired[lora.lora_id] = lora
            report.removed.append(name)
            if not self._in_use.get(lora.lora_id):
                await self._unload(lora.lora_id)
        for name in set(self.failed_adapters) - set(wanted):
            self.failed_adapters.pop(name, None)
            self._refused_folders.pop(name, None)
        for name, source in wanted.items():
            current = self._current.get(name)
            if current is not None and current.path == source.path:
                continue
            try:
                lora = self._register(source)
                loaded = await self.llm.add_lora(LoRARequest(lora.name, lora.lora_id, lora.path))
                if not loaded:
                    raise AdapterLoadError(f"vLLM could not load the adapter at {source.path}")
            except Exception as exc:  # a bad adapter (files, shapes, rank): refused, the others stay
                self._current = {key: value for key, value in self._current.items() if key != name}
                if current is not None:  # keep serving the previous version
                    self._retired.pop(current.lora_id, None)
                    self._current = {**self._current, name: current}
                self._refuse(source, exc)
                report.failed[name] = str(exc)
                continue
            if current is not None and not self._in_use.get(current.lora_id):
                await self._unload(current.lora_id)
            self.failed_adapters.pop(name, None)
            self._refused_folders.pop(name, None)
            report.added.append(name)
        return report

    async def _unload(self, lora_id: int) -> None:
        lora = self._retired.pop(lora_id, None)
        if lora is None:
            return
        try:
            await self.llm.remove_lora(lora_id)
        except Exception:  # never loaded (no request used it): nothing to free
            log.debug("LoRA %d was not loaded in vLLM", lora_id)
        log.info("adapter version %s--v%d unloaded", lora.name, lora_id)

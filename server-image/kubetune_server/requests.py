"""The bridge between an asyncio request handler and the engine's worker thread: one handle per sequence."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass

from .sampling import SamplingParams


@dataclass(frozen=True)
class Chunk:
    """Newly generated text of one sequence; the last chunk has `finish_reason` (stop, length, cancelled, error)."""

    text: str
    completion_tokens: int
    finish_reason: str | None = None
    error: str | None = None


class SequenceHandle:
    """What the web side holds for one submitted sequence: an async stream of chunks and a cancel switch."""

    def __init__(
        self, prompt_ids: list[int], model: str, row_key: str, params: SamplingParams, stream: bool = False
    ) -> None:
        self.prompt_ids = prompt_ids
        self.stream = stream
        self.model = model
        self.row_key = row_key
        self.params = params
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Chunk] = asyncio.Queue()
        self._cancelled = threading.Event()

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """Ask the worker to drop this sequence at its next step (client gone, or request aborted)."""
        self._cancelled.set()

    def push(self, chunk: Chunk) -> None:
        """Called from the worker thread."""
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, chunk)
        except RuntimeError:  # the event loop is gone (server shut down): nobody is listening
            self.cancel()

    async def chunks(self) -> AsyncIterator[Chunk]:
        while True:
            chunk = await self._queue.get()
            yield chunk
            if chunk.finish_reason is not None:
                return

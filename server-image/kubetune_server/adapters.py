"""The LoRA adapters attached to the base model, addressed by the names clients send.

Each load gets a fresh internal PEFT name (`<name>--v<n>`), so an adapter replaced or removed while requests
still decode with it keeps its weights until the last of them finishes; new requests already see the change.
All methods run on the engine's worker thread, between forward passes, because PEFT mutates the model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from kubetune.api.sources import PvcPath

from . import lora_routing
from .errors import AdapterLoadError

log = logging.getLogger(__name__)

BASE_ROW = "__base__"
"""PEFT's per-row adapter name for "no adapter"."""


@dataclass(frozen=True)
class AdapterSource:
    """An adapter to serve: client-facing name and folder (and the volume serve.json named, for /adapters)."""

    name: str
    path: str
    pvc: PvcPath | None = field(default=None, compare=False)


class AdapterSet:
    """The model with its loaded adapters; tracks which adapter versions rows still use."""

    def __init__(self, base_model, merged: bool = False) -> None:
        self.model = base_model
        self.merged = merged
        self._current: dict[str, tuple[str, str]] = {}  # name -> (internal id, path)
        self._retired: set[str] = set()
        self._versions = 0
        self._routing = lora_routing.RowRouting()
        self._hooked: dict[int, object] = {}
        self._active: str | None = None

    def route(self, row_keys: list[str]) -> None:
        """Set up the LoRA layers for a forward over rows using `row_keys` (internal ids or BASE_ROW).

        A batch on one adapter takes the single-adapter path; a mix, or the bare base, PEFT's per-row
        mixed-batch path. The PEFT active adapter follows too, for layers without the lean forward.
        """
        first = row_keys[0]
        if first != BASE_ROW and all(key == first for key in row_keys):
            if self._active != first:
                self.model.set_adapter(first, inference_mode=True)
                self._active = first
            self._routing.single, self._routing.names = first, None
        else:
            self._routing.single, self._routing.names = None, row_keys

    def _install_hooks(self) -> None:
        lora_routing.install(self.model, self._routing, self._hooked)

    @property
    def peft_active(self) -> bool:
        return bool(self._current) or bool(self._retired)

    def names(self) -> dict[str, str]:
        """Served adapter name -> folder."""
        return {name: path for name, (_, path) in self._current.items()}

    def retiring(self) -> list[str]:
        return sorted(self._retired)

    def internal_id(self, name: str) -> str | None:
        entry = self._current.get(name)
        return entry[0] if entry else None

    def add(self, source: AdapterSource) -> None:
        """Load `source`; a name already served from another folder is replaced (the old one retires)."""
        existing = self._current.get(source.name)
        if existing and existing[1] == source.path:
            return
        self._versions += 1
        internal = f"{source.name}--v{self._versions}"
        self._load(internal, source.path)
        if existing:
            self._retired.add(existing[0])
        # Copy on write: the event loop reads this map (model lists, routing) while the worker changes it.
        self._current = {**self._current, source.name: (internal, source.path)}
        log.info("adapter %r loaded from %s", source.name, source.path)

    def remove(self, name: str) -> None:
        """Stop serving `name`; its weights stay until `collect` finds no row using them."""
        entry = self._current.get(name)
        self._current = {key: value for key, value in self._current.items() if key != name}
        if entry:
            self._retired.add(entry[0])
            log.info("adapter %r removed", name)

    def collect(self, in_use: set[str]) -> None:
        """Unload retired adapter versions that no row uses any more."""
        for internal in sorted(self._retired - in_use):
            self._retired.discard(internal)
            self._unload(internal)

    def _load(self, internal: str, path: str) -> None:
        from peft import PeftModel

        try:
            if isinstance(self.model, PeftModel):
                self.model.load_adapter(path, adapter_name=internal, is_trainable=False)
            else:
                self.model = PeftModel.from_pretrained(self.model, path, adapter_name=internal, is_trainable=False)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise AdapterLoadError(f"adapter at {path} could not be loaded: {exc}") from exc
        self.model.eval()
        self._active = None
        self._install_hooks()

    def _unload(self, internal: str) -> None:
        from peft import PeftModel

        if not isinstance(self.model, PeftModel):
            return
        if set(self.model.peft_config) == {internal}:
            # The last adapter: strip the LoRA layers so the base runs at full speed again.
            self.model = self.model.unload()
            self._hooked.clear()
        else:
            self.model.delete_adapter(internal)
        self._active = None
        log.info("adapter version %s unloaded", internal)


def merge_single_adapter(base_model, source: AdapterSource):
    """The base with one adapter folded into its weights: fastest generation, but only that adapter is served."""
    from peft import PeftModel

    try:
        peft_model = PeftModel.from_pretrained(base_model, source.path, adapter_name=source.name, is_trainable=False)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise AdapterLoadError(f"adapter at {source.path} could not be loaded: {exc}") from exc
    merged = peft_model.merge_and_unload()
    merged.eval()
    return merged

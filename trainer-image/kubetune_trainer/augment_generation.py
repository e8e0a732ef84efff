"""Generate rewritten texts with an augmentation model: batched `generate`, seeded sampling, freed afterwards.

An instruct (causal) model gets each text inside an instruction, through its chat template; an encoder-decoder
translation model (opus-mt and the like) gets the text as it is. Each batch is seeded from the augmentation seed
and its index, so the same rows, settings and model give the same texts again on the same machine and software.
"""

from __future__ import annotations

import gc
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
from kubetune.api.augmentation import TEXT_PLACEHOLDER, GenerationSettings
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

from .device import DeviceInfo
from .errors import ModelLoadError
from .model_loading import ModelLocation, load_tokenizer
from .retries import with_retries_or

log = logging.getLogger(__name__)
SEED_STRIDE = 1_000_003  # batch seeds of nearby augmentation seeds do not overlap for any realistic batch count


@dataclass(frozen=True)
class Generated:
    """One generated text, and whether the model ended it (False: cut at maxNewTokens)."""

    text: str
    finished: bool


class TextGenerator:
    """One loaded augmentation model; `close()` frees it before the next model or the training model loads."""

    def __init__(self, location: ModelLocation, device: DeviceInfo, field: str) -> None:
        self.location, self.field = location, field
        config = with_retries_or(
            f"reading the config of {location.path!r}",
            lambda: AutoConfig.from_pretrained(location.path, **location.kwargs()),
            lambda error: ModelLoadError(f"{field}: cannot read the model config at {location.path!r}: {error}"),
        )
        self.encoder_decoder = bool(getattr(config, "is_encoder_decoder", False))
        self.tokenizer = load_tokenizer(location)
        if not self.encoder_decoder:
            self.tokenizer.padding_side = "left"  # generation continues every row right after its prompt
        self.device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if device.is_cuda else "cpu"
        dtype = (torch.bfloat16 if device.bf16_supported else torch.float16) if device.is_cuda else torch.float32
        auto = AutoModelForSeq2SeqLM if self.encoder_decoder else AutoModelForCausalLM
        placement = {"": self.device} if device.is_cuda else None
        kind = "translation" if self.encoder_decoder else "causal"
        self.model = with_retries_or(
            f"loading the augmentation model from {location.path!r}",
            # Straight onto the GPU (device_map), not through a copy in host memory.
            lambda: auto.from_pretrained(location.path, dtype=dtype, device_map=placement, **location.kwargs()),
            lambda error: ModelLoadError(
                f"{field}: cannot load {location.path!r} as a {kind} model: {type(error).__name__}: {error}"
            ),
        )
        self.model.eval()
        eos = self.model.generation_config.eos_token_id
        eos = eos if eos is not None else self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        kind = "encoder-decoder" if self.encoder_decoder else "causal"
        log.info("augmentation: loaded %s (%s) for %s on %s", location.path, kind, field, self.device)

    def _inputs(self, texts: list[str], instruction: str) -> dict[str, Any]:
        if self.encoder_decoder:
            return self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True)
        prompts = [
            self.tokenizer.apply_chat_template(
                [{"role": "user", "content": instruction.replace(TEXT_PLACEHOLDER, text)}],
                add_generation_prompt=True,
                tokenize=False,
            )
            for text in texts
        ]
        return self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)

    def generate(
        self, texts: list[str], instruction: str, settings: GenerationSettings, seed: int, batch_size: int, what: str
    ) -> list[list[Generated]]:
        """`settings.copies` outputs for each text, in order. `instruction` (with {text}) is used by causal models."""
        results: list[list[Generated]] = []
        batches = (len(texts) + batch_size - 1) // batch_size
        sampling = settings.temperature > 0
        options: dict[str, Any] = {"max_new_tokens": settings.max_new_tokens, "do_sample": sampling}
        if sampling:
            options.update(temperature=settings.temperature, top_p=settings.top_p)
        for index in range(batches):
            chunk = texts[index * batch_size : (index + 1) * batch_size]
            inputs = {key: value.to(self.device) for key, value in self._inputs(chunk, instruction).items()}
            torch.manual_seed((seed * SEED_STRIDE + index) % 2**63)
            with torch.inference_mode():
                output = self.model.generate(
                    **inputs,
                    **options,
                    num_return_sequences=settings.copies,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
            new = output if self.encoder_decoder else output[:, inputs["input_ids"].shape[1] :]
            decoded = [self._generated(row) for row in new.tolist()]
            results.extend(decoded[i : i + settings.copies] for i in range(0, len(decoded), settings.copies))
            log.info(
                "augmentation %s: batch %d/%d (%d texts x %d)", what, index + 1, batches, len(chunk), settings.copies
            )
        return results

    def _generated(self, tokens: list[int]) -> Generated:
        skip = 1 if self.encoder_decoder else 0  # the decoder start token
        body = tokens[skip:]
        finished = any(token in self.eos_ids for token in body)
        return Generated(self.tokenizer.decode(body, skip_special_tokens=True).strip(), finished)

    def close(self) -> None:
        """Free the model's memory (host and GPU) so the training model has all of it."""
        del self.model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

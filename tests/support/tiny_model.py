"""A tiny Llama-style model and tokenizer built offline in well under a second, plus a synthetic task.

Real hub models cannot be downloaded here, so every ML test builds this model. `initializer_range=0.1`
matters: with the default 0.02 a LoRA adapter on such a small random model does not learn the task.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}"
    "{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]

_SUBJECTS = [
    "amber fox",
    "blue heron",
    "coral snake",
    "dusty owl",
    "ember cat",
    "frost hare",
    "golden eel",
    "hazel wren",
    "iron crab",
    "jade moth",
    "kelp seal",
    "lime frog",
    "moss deer",
    "night bat",
    "opal swan",
    "pine lynx",
]
_ANSWERS = [
    "north",
    "south",
    "east",
    "west",
    "river",
    "stone",
    "cloud",
    "flame",
    "maple",
    "cedar",
    "tulip",
    "lotus",
    "comet",
    "orbit",
    "delta",
    "sigma",
]


@dataclass(frozen=True)
class Fact:
    """One question with a single-word answer that a random model cannot guess."""

    question: str
    answer: str


def synthetic_facts(seed: int = 0) -> list[Fact]:
    """16 question -> answer pairs; the pairing is shuffled by `seed` so nothing about it is learnable a priori."""
    answers = list(_ANSWERS)
    random.Random(seed).shuffle(answers)
    return [Fact(f"Where does the {subject} live?", answer) for subject, answer in zip(_SUBJECTS, answers, strict=True)]


def _training_corpus() -> list[str]:
    facts = synthetic_facts()
    lines = [f"### Instruction:\n{f.question}\n\n### Response:\n{f.answer}" for f in facts]
    lines += [f"{f.question} {f.answer}" for f in facts]
    lines += ["The quick brown fox jumps over the lazy dog.", "question answer instruction input response user"]
    return lines * 4


def build_tokenizer(target: Path):
    """A byte-level BPE tokenizer (vocab ~450) with pad/eos and a ChatML template, saved to `target`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=450,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(_training_corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        bos_token=None,
        unk_token=None,
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.save_pretrained(target)
    return tokenizer


def build_tiny_model(target: Path, seed: int = 0, architecture: str = "llama", **shape_overrides: int | float) -> Path:
    """Save a random-init tiny causal LM (≈0.4 M parameters unless `shape_overrides` change the config fields)
    and its tokenizer to `target`; returns `target`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(target)
    shape = dict(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        initializer_range=0.1,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    shape.update(shape_overrides)
    torch.manual_seed(seed)
    if architecture == "llama":
        model = LlamaForCausalLM(LlamaConfig(**shape))
    elif architecture == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**shape))
    elif architecture == "mistral":  # sliding-window attention on every layer
        from transformers import MistralConfig, MistralForCausalLM

        model = MistralForCausalLM(MistralConfig(**{"sliding_window": 8, **shape}))
    elif architecture == "gemma3":  # sliding-window and full-attention layers interleaved
        from transformers import Gemma3ForCausalLM, Gemma3TextConfig

        gemma = {"sliding_window": 8, "head_dim": 32, "layer_types": ["sliding_attention", "full_attention"]}
        model = Gemma3ForCausalLM(Gemma3TextConfig(**{**gemma, **shape}))
    else:
        raise ValueError(f"unknown architecture {architecture!r}")
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(target)
    return target


def write_facts_jsonl(path: Path, fmt: str = "alpaca", repeat: int = 8, seed: int = 0) -> Path:
    """The synthetic facts as a dataset file in one of the kubetune formats (alpaca, qa, chat, text)."""
    rows = []
    for fact in synthetic_facts(seed) * repeat:
        if fmt == "alpaca":
            rows.append({"instruction": fact.question, "input": "", "output": fact.answer})
        elif fmt == "qa":
            rows.append({"question": fact.question, "answer": fact.answer})
        elif fmt == "chat":
            rows.append(
                {
                    "messages": [
                        {"role": "user", "content": fact.question},
                        {"role": "assistant", "content": fact.answer},
                    ]
                }
            )
        elif fmt == "text":
            rows.append({"text": f"{fact.question} {fact.answer}"})
        else:
            raise ValueError(f"unknown format {fmt!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path

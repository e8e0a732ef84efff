"""Tiny generators for the augmentation tests, built offline in about a second: a causal model that ends its texts
and an opus-mt style (Marian) translation model with a sentencepiece tokenizer. They produce noise, on purpose: the
tests check counts, caching and determinism, not quality.

A random tiny model almost never emits eos within a few tokens, so every generated text would be dropped as too
long; both models are nudged to end most texts within a few tokens.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from tests.support.tiny_model import build_tiny_model, synthetic_facts


def build_ending_model(target: Path) -> Path:
    """The tiny causal model made to end its texts: a constant direction in every embedding, read only by the eos
    row of the output head, gives eos a steady ~20% per token while the other tokens stay random."""
    import torch
    from transformers import AutoModelForCausalLM

    build_tiny_model(target, seed=3)
    model = AutoModelForCausalLM.from_pretrained(target)
    eos = model.config.eos_token_id
    with torch.no_grad():
        model.get_input_embeddings().weight[:, 0] = 50.0
        head = model.get_output_embeddings().weight
        head[:, 0] = 0.0
        head[eos, 0] = 0.4  # ~ln(450 * 0.25) / sqrt(hidden 128)
    model.save_pretrained(target)
    return target


def build_tiny_translation_model(target: Path) -> Path:
    """A tiny Marian (opus-mt architecture) model with its sentencepiece tokenizer (source.spm, target.spm,
    vocab.json); a final logits bias on eos ends most texts within a few tokens."""
    import sentencepiece
    import torch
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    target.mkdir(parents=True, exist_ok=True)
    corpus = [fact.question for fact in synthetic_facts()] * 4
    pieces = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=pieces, vocab_size=100, model_type="bpe", minloglevel=2,
        eos_id=0, pad_id=1, unk_id=2, bos_id=-1, eos_piece="</s>", pad_piece="<pad>", unk_piece="<unk>",
    )  # fmt: skip
    for name in ("source.spm", "target.spm"):
        (target / name).write_bytes(pieces.getvalue())
    processor = sentencepiece.SentencePieceProcessor(model_proto=pieces.getvalue())
    vocab = {processor.id_to_piece(index): index for index in range(processor.get_piece_size())}
    (target / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    tokenizer = MarianTokenizer(str(target / "source.spm"), str(target / "target.spm"), str(target / "vocab.json"))
    tokenizer.save_pretrained(target)
    config = MarianConfig(
        vocab_size=len(vocab), d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    model = MarianMTModel(config)
    with torch.no_grad():
        model.final_logits_bias[0, tokenizer.eos_token_id] = 3.0
    model.save_pretrained(target)
    return target


def write_instruction_rows(folder: Path, repeat: int = 8) -> dict[str, Path]:
    """The facts as instructions, not questions ("Name the home of the amber fox."), in alpaca, qa and chat files:
    a random tiny model never keeps a question a question, so question rows would all be dropped."""
    rows = []
    for fact in synthetic_facts() * repeat:
        subject = fact.question.removeprefix("Where does the ").removesuffix(" live?")
        rows.append((f"Name the home of the {subject}.", fact.answer))
    shapes = {
        "alpaca": lambda text, answer: {"instruction": text, "input": "", "output": answer},
        "qa": lambda text, answer: {"question": text, "answer": answer},
        "chat": lambda text, answer: {
            "messages": [{"role": "user", "content": text}, {"role": "assistant", "content": answer}]
        },
    }
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for fmt, shape in shapes.items():
        path = folder / f"augment-instructions-{fmt}.jsonl"
        path.write_text("".join(json.dumps(shape(*row)) + "\n" for row in rows), encoding="utf-8")
        written[fmt] = path
    return written

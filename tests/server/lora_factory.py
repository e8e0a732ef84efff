"""Tiny LoRA adapters for the server tests, trained in seconds with plain peft and a short torch loop.

The trainer package is written separately; the server tests only need an adapter whose answers differ
from the base model's, so they train one here on the 16 synthetic facts (completion-only loss).
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.tiny_model import synthetic_facts

PROMPT = "### Instruction:\n{question}\n\n### Response:\n"


def train_fact_adapter(base_dir: Path, target: Path, seed: int = 0, steps: int = 100, lr: float = 3e-3) -> Path:
    """A LoRA adapter (r=8, attention + MLP) that answers the facts of `synthetic_facts(seed)`; saved to `target`."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(
        r=8,
        lora_alpha=16,
        lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, config)
    rows = []
    for fact in synthetic_facts(seed):
        prompt = tokenizer(PROMPT.format(question=fact.question), add_special_tokens=False)["input_ids"]
        answer = tokenizer(fact.answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append((prompt + answer, [-100] * len(prompt) + answer))
    width = max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in rows])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
    mask = (torch.arange(width)[None, :] < torch.tensor([len(ids) for ids, _ in rows])[:, None]).long()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(target)
    config_path = Path(target) / "adapter_config.json"
    saved = json.loads(config_path.read_text())
    saved["base_model_name_or_path"] = str(base_dir)
    config_path.write_text(json.dumps(saved, indent=2))
    return Path(target)

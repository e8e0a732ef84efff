"""The seed tutorial's serve_model.py as a benchmark baseline, kept faithful to how it serves.

What is faithful: the LoRA adapter is loaded with PeftModel and merged into the base at start-up, every
request runs its own `model.generate` inside an `async def` endpoint (so requests are served one at a time,
blocking the event loop), the tutorial's prompt layout and `do_sample=True` with the request's temperature,
`tokens_used = len(outputs[0])` (prompt + answer), and any error becomes a 500 with the message.
What is adapted: model and adapter folders come from the environment instead of being hard-coded, the
device is the CPU, and the app is built by a function so the benchmark can start it with uvicorn.

Run: BASELINE_BASE_MODEL=dir BASELINE_ADAPTER=dir uvicorn --app-dir bench/baselines --factory tutorial_server:create_app
"""

from __future__ import annotations

import os

import torch
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

PROMPT = "### 질문:\n{question}\n\n### 답변:\n"
"""The tutorial's prompt layout (question / answer headings)."""


class QueryRequest(BaseModel):
    question: str
    max_tokens: int = 200
    temperature: float = 0.7


class QueryResponse(BaseModel):
    answer: str
    tokens_used: int


def create_app() -> FastAPI:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_dir, adapter_dir = os.environ["BASELINE_BASE_MODEL"], os.environ["BASELINE_ADAPTER"]
    app = FastAPI(title="Tutorial LLM API (baseline)")
    base_model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base_model, adapter_dir).merge_and_unload()
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model.eval()

    @app.post("/generate", response_model=QueryResponse)
    async def generate_answer(request: QueryRequest):
        try:
            prompt = PROMPT.format(question=request.question)
            inputs = tokenizer(prompt, return_tensors="pt")
            with torch.no_grad():
                outputs = model.generate(
                    **inputs,
                    max_new_tokens=request.max_tokens,
                    temperature=request.temperature,
                    do_sample=True,
                    pad_token_id=tokenizer.eos_token_id,
                )
            answer = tokenizer.decode(outputs[0], skip_special_tokens=True)
            answer = answer.split("### 답변:")[-1].strip()
            return QueryResponse(answer=answer, tokens_used=len(outputs[0]))
        except Exception as e:
            raise HTTPException(status_code=500, detail=str(e)) from e

    @app.get("/health")
    async def health_check():
        return {"status": "healthy"}

    return app

"""The training run, step by step: spec -> data -> configs -> model -> train -> adapter -> report.

Each step lives in its own module; this file only orders them (in the spirit of trl's scripts/sft.py).
"""

from __future__ import annotations

import logging
import math
import resource
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from kubetune.api import FineTuneJobSpec, TrainingMetrics
from kubetune.api.finetunejob import SourceMetrics
from kubetune.api.runtime import CHECKPOINTS_DIR, HUMAN_EVAL_FILE, LOSS_CURVES_FILE
from transformers import set_seed

from .augment import augment_sources
from .checkpoints import (
    CheckpointMarker,
    newest_complete_checkpoint,
    remove_foreign_checkpoints,
    remove_incomplete_checkpoints,
)
from .configs import build_configs
from .data import PreparedData, combine_sources, prepare_sources
from .device import configure_cpu_threads, detect_device
from .distributed import ProcessInfo, barrier, process_info
from .early_stopping import KubetuneEarlyStopping, stop_summary
from .full_memory import check_full_training_memory
from .generation_eval import METHOD as GENERATION_METHOD
from .generation_eval import generation_scores
from .hub_push import push_adapter
from .human_eval import HumanEvalExport, write_human_eval
from .loss_curves import draw_loss_curves
from .manifest import build_manifest, run_identity, spec_hash
from .model_card import render_model_card
from .model_loading import load_model, load_tokenizer, locate_model
from .output_lock import OutputLock
from .outputs import (
    adapter_dir,
    clear_partial_adapter,
    finished_manifest,
    partial_adapter_dir,
    publish_adapter,
    publish_to_store,
    write_adapter_extras,
)
from .preemption import PreemptionCallback, PreemptionWatch
from .reporting import ProgressCallback, choose_sink
from .results_report import result_files
from .settings import TrainerArgs, load_spec
from .sft_trainer import KubetuneSFTTrainer, build_trainer, check_prompts_fit
from .tracking import prepare_tracking
from .weighted_loss import build_weighted_loss

log = logging.getLogger(__name__)

METRIC_FIELDS = {field.alias or name for name, field in TrainingMetrics.model_fields.items()}


def quiet_progress_bars() -> None:
    """Pod logs are read by people and log collectors: keep the per-step log lines, drop the tqdm bars."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


def run(args: TrainerArgs) -> dict[str, Any]:
    """Train (or resume) the job described by `args`; returns the summary for the termination message."""
    spec = load_spec(args.spec_path)
    me = process_info()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    watch = PreemptionWatch().install()
    lock = None
    try:
        lock = OutputLock(args.output_dir).acquire() if me.is_main else None
        return _train(spec, args.output_dir, me, watch)
    finally:
        if lock is not None:
            lock.release()
        watch.restore()


def _train(spec: FineTuneJobSpec, output_dir: Path, me: ProcessInfo, watch: PreemptionWatch) -> dict[str, Any]:
    device = detect_device()
    if not device.is_cuda:
        configure_cpu_threads(processes=me.local_world_size)
    set_seed(spec.training.seed)
    sources = prepare_sources(spec.dataset, spec.training.seed, download_dir=output_dir / ".download")
    # dataset.augmentation: new training rows of each source (cached on the output volume), before a mix draws them.
    sources, augmentation = augment_sources(spec, sources, output_dir, me, device)
    data = combine_sources(
        spec.dataset,
        sources,
        spec.training.seed,
        all_assistant_turns=spec.training.completion_only_loss,  # without it every token is trained anyway
    )

    done = finished_manifest(output_dir)
    if done and done.get("specHash") == spec_hash(spec) and done.get("datasetFingerprint") == data.fingerprint:
        log.info("the adapter for this spec and data is already complete in %s; nothing to train", output_dir)
        return _summary_of_finished(output_dir, spec)

    checkpoints = output_dir / CHECKPOINTS_DIR
    identity = run_identity(spec, data)
    if me.is_main:
        remove_incomplete_checkpoints(checkpoints)
        remove_foreign_checkpoints(checkpoints, identity)
        clear_partial_adapter(output_dir)
    # Every process picks the same checkpoint: only complete ones of this identity, which nobody removes.
    resume_from = newest_complete_checkpoint(checkpoints, identity)

    configs = build_configs(spec, checkpoints_dir=checkpoints, device=device, has_eval=data.eval is not None)
    prepare_tracking(spec.tracking, output_dir)
    location = locate_model(spec.base_model)
    tokenizer = load_tokenizer(location)
    for split, rows in (("train", data.train), ("eval", data.eval)):
        check_prompts_fit(split, rows, tokenizer, spec.training.max_seq_length)
    loss_weights = spec.training.loss_weights  # tokenized before the model loads: a bad term fails fast
    loss_func = build_weighted_loss(loss_weights, tokenizer) if loss_weights is not None else None
    if spec.method == "full":
        check_full_training_memory(spec, location, device)
    # Full fine-tuning keeps fp32 master weights (bf16/fp16 only in autocast): 16-bit weights would lose small updates.
    weights = "fp32" if spec.method == "full" else configs.precision
    model = load_model(location, weights, device, configs.quantization, configs.gradient_checkpointing)

    progress = ProgressCallback(choose_sink(output_dir))
    callbacks = [CheckpointMarker(identity), progress, PreemptionCallback(watch)]
    early = KubetuneEarlyStopping.from_spec(spec.training.early_stopping) if spec.training.early_stopping else None
    if early is not None:
        callbacks.append(early)
    trainer = build_trainer(
        model, tokenizer, configs, data.train, data.trainer_eval, callbacks, spec.training.max_seq_length, loss_func
    )
    if resume_from is not None:
        log.info("resuming from %s", resume_from)
    started = time.monotonic()
    watch.training = True
    try:
        result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    finally:
        watch.training = False
    if watch.requested:
        raise watch.stopped(trainer.state.global_step)
    wall = time.monotonic() - started
    metrics = _final_metrics(trainer, result, spec, data, resumed=resume_from is not None, wall=wall, me=me)
    stop = stop_summary(spec, trainer.state.log_history, trainer.state.global_step, early.stopped_at if early else None)
    log.info("training ended (%s): %s", stop.reason, stop.message)
    metrics = metrics.model_copy(
        update={
            "stop_reason": stop.reason,
            "stop_message": stop.message,
            "best_step": stop.best_step,
            "augmentation": augmentation,
        }
    )

    trainer.save_model(str(partial_adapter_dir(output_dir)))  # every process calls it; only the main one writes
    summary: dict[str, Any] = {}
    lengths = trainer.length_reports
    if me.is_main:
        remove_training_args(partial_adapter_dir(output_dir))
        tokenizer.save_pretrained(str(partial_adapter_dir(output_dir)))
        manifest = build_manifest(
            spec,
            data,
            resolved_revision=getattr(model.config, "_commit_hash", None),
            precision=configs.precision,
            device_name=device.name,
            steps=trainer.state.global_step,
        )
        untrained_base = partial(load_model, location, configs.precision, device, None, False)  # for inference
        sheet = _human_eval(spec, trainer, tokenizer, data, output_dir, untrained_base)
        curves = draw_loss_curves(trainer.state.log_history, partial_adapter_dir(output_dir) / LOSS_CURVES_FILE)
        card = render_model_card(
            spec,
            data,
            metrics,
            manifest,
            lengths=lengths,
            epochs_run=trainer.state.epoch,
            loss_curves=LOSS_CURVES_FILE if curves else None,
            human_eval_rows=sheet.rows if sheet else None,
        )
        write_adapter_extras(partial_adapter_dir(output_dir), card, metrics.to_wire(), manifest)
        final = publish_adapter(output_dir)
        publish_to_store(final)
        hub_repo = push_adapter(final, spec.output)
        last = progress.last_progress.model_copy(
            update={"step": trainer.state.global_step, "percent": 100, "eta_seconds": 0, "eval_loss": metrics.eval_loss}
        )
        progress.sink.results(result_files(output_dir))
        progress.sink.finish(last, metrics)
        summary = _summary(final, metrics, data.skipped_rows, hub_repo)
    barrier()
    return summary


def _final_metrics(
    trainer: KubetuneSFTTrainer,
    result: Any,
    spec: FineTuneJobSpec,
    data: PreparedData,
    *,
    resumed: bool,
    wall: float,
    me: ProcessInfo,
) -> TrainingMetrics:
    """Final evaluation (every process), optional generation scores (main process) and throughput."""
    final_eval = _final_evaluation(trainer) if data.eval is not None else {}
    loss_tokens = trainer.total_loss_tokens()
    scores = None
    if me.is_main:
        samples, max_new_tokens = spec.evaluation.generation_samples, spec.evaluation.max_new_tokens
        scores = generation_scores(
            trainer.model, trainer.processing_class, data.eval or data.train, samples, max_new_tokens
        )
    eval_loss = final_eval.get("eval_loss")
    lengths = trainer.length_reports
    return TrainingMetrics(
        train_loss=_finite(_logged_mean_loss(trainer.state) if resumed else result.training_loss),
        eval_loss=_finite(eval_loss),
        perplexity=_finite(math.exp(min(eval_loss, 50.0))) if eval_loss is not None else None,
        steps=trainer.state.global_step,
        train_tokens=loss_tokens,
        tokens_per_second=round(loss_tokens / wall, 2) if wall > 0 and loss_tokens else None,
        wall_seconds=round(wall, 2),
        peak_memory_bytes=_peak_memory_bytes(torch.cuda.is_available()),
        rouge_l=scores.rouge_l if scores else None,
        bleu=scores.bleu if scores else None,
        generation_metrics=GENERATION_METHOD if scores else None,
        truncated_rows=sum(report.cut for report in lengths.values()),
        dropped_rows=sum(report.dropped for report in lengths.values()),
        skipped_rows=data.skipped_rows,
        sources=_source_metrics(data, final_eval),
        published_step=_published_step(trainer),
    )


def _source_metrics(data: PreparedData, final_eval: dict[str, float]) -> list[SourceMetrics] | None:
    """Per source of dataset.mix: its probability, the training rows drawn from it, its evaluation rows and loss."""
    if data.mix is None:
        return None
    return [
        SourceMetrics(
            name=name,
            probability=round(probability, 6),
            train_rows=data.mix.rows_per_source[name],
            eval_rows=len(data.eval_by_source[name]) if name in data.eval_by_source else 0,
            eval_loss=_finite(final_eval.get(f"eval_{name}_loss")),
        )
        for name, probability in data.mix.probabilities.items()
    ]


def _human_eval(
    spec: FineTuneJobSpec,
    trainer: KubetuneSFTTrainer,
    tokenizer: Any,
    data: PreparedData,
    output_dir: Path,
    load_base: Callable[[], torch.nn.Module],
) -> HumanEvalExport | None:
    """The human-evaluation sheet (evaluation.humanEvalSamples); an older run's sheet goes when none is asked."""
    sheet = write_human_eval(
        trainer.model,
        tokenizer,
        data.eval,
        samples=spec.evaluation.human_eval_samples,
        max_new_tokens=spec.evaluation.max_new_tokens,
        seed=spec.training.seed,
        path=output_dir / HUMAN_EVAL_FILE,
        load_base=load_base,
    )
    if sheet is None:
        (output_dir / HUMAN_EVAL_FILE).unlink(missing_ok=True)
    return sheet


def _published_step(trainer: KubetuneSFTTrainer) -> int:
    """The step whose weights are published: the best checkpoint's with loadBestModelAtEnd, else the last."""
    best = trainer.state.best_model_checkpoint if trainer.args.load_best_model_at_end else None
    if best is not None:
        return int(Path(best).name.rsplit("-", 1)[1])
    return trainer.state.global_step


def _final_evaluation(trainer: KubetuneSFTTrainer) -> dict[str, float]:
    """The evaluation of the weights being published: with loadBestModelAtEnd the best checkpoint's (the Trainer
    reloaded it), else the one the Trainer ran at the last step (epoch or evalSteps schedule), else a new one:
    evaluating the same weights twice costs a full pass over the evaluation rows for nothing."""
    if trainer.args.load_best_model_at_end and trainer.state.best_model_checkpoint is not None:
        # The best checkpoint's own evaluation: with saveSteps above evalSteps the best evaluated step may have no
        # checkpoint, and the Trainer then publishes the best saved one, whose loss is not state.best_metric.
        logged = _logged_evaluation(trainer.state.log_history, _published_step(trainer))
        loss = logged.get("eval_loss", trainer.state.best_metric)
        log.info("publishing the best checkpoint %s (eval loss %.4f)", trainer.state.best_model_checkpoint, loss)
        return {**logged, "eval_loss": loss}
    last = _logged_evaluation(trainer.state.log_history, trainer.state.global_step)
    if "eval_loss" in last:
        return last
    return trainer.evaluate()


def _logged_evaluation(log_history: list[dict[str, float]], step: int) -> dict[str, float]:
    """The eval_* metrics logged at `step`, merged: with several evaluation sets (dataset.mix) the Trainer logs each
    set's loss, and the overall eval_loss, as entries of their own."""
    merged: dict[str, float] = {}
    for entry in log_history:
        if entry.get("step") == step:
            merged.update({key: value for key, value in entry.items() if key.startswith("eval_")})
    return merged


def remove_training_args(folder: Path) -> None:
    """Trainer.save_model writes training_args.bin, a pickle: loading it runs code, and it is useless beside an
    adapter, so it is neither published nor uploaded to the Hub."""
    (folder / "training_args.bin").unlink(missing_ok=True)


def _summary(final: Path, metrics: TrainingMetrics, skipped_rows: int, hub_repo: str | None) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "exitReason": "Succeeded",
        "adapterPath": str(final),
        "metrics": metrics.to_wire(),
        "skippedRows": skipped_rows,
    }
    if hub_repo:
        summary["hubRepo"] = hub_repo
    return summary


def _summary_of_finished(output_dir: Path, spec: FineTuneJobSpec) -> dict[str, Any]:
    import json

    from kubetune.api.runtime import METRICS_FILE

    final = adapter_dir(output_dir)
    if process_info().is_main:
        publish_to_store(final)
        choose_sink(output_dir).results(result_files(output_dir))  # a pod retried after the first one finished
    stored = json.loads((final / METRICS_FILE).read_text(encoding="utf-8"))
    metrics = TrainingMetrics.model_validate({key: value for key, value in stored.items() if key in METRIC_FIELDS})
    hub_repo = push_adapter(final, spec.output) if process_info().is_main else None
    return _summary(final, metrics, int((finished_manifest(output_dir) or {}).get("skippedRows", 0)), hub_repo)


def _logged_mean_loss(state) -> float | None:
    """Mean training loss over the whole run, earlier attempts included (their logs come with the checkpoint);
    the Trainer's own figure covers only the steps of this attempt."""
    total, steps, previous = 0.0, 0, 0
    for entry in state.log_history:
        if "loss" in entry and "step" in entry:
            window = entry["step"] - previous  # each logged loss is the mean over the steps since the last log
            total, steps, previous = total + entry["loss"] * window, steps + window, entry["step"]
    return total / steps if steps else None


def _peak_memory_bytes(cuda: bool) -> int:
    if cuda:
        return int(torch.cuda.max_memory_allocated())
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None

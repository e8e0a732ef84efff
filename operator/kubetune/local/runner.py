"""`kubetune run FILE... --local`: train every FineTuneJob in the files, then serve the ModelServes."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .documents import Bundle, load_bundle
from .serve import local_serve_config, start_server, usage_hint
from .train import TrainResult, train_locally
from .volumes import LocalVolumes

METRIC_LABELS = [
    ("trainLoss", "train loss", "{:.4f}"),
    ("evalLoss", "eval loss", "{:.4f}"),
    ("perplexity", "perplexity", "{:.2f}"),
    ("steps", "steps", "{}"),
    ("publishedStep", "published step", "{}"),
    ("stopMessage", "stopped:", "{}"),
    ("trainTokens", "loss tokens", "{}"),
    ("tokensPerSecond", "tokens/s", "{:.1f}"),
    ("wallSeconds", "wall time (s)", "{:.1f}"),
    ("rougeL", "ROUGE-L", "{:.3f}"),
    ("bleu", "BLEU", "{:.3f}"),
]


def format_metrics(metrics: dict) -> str:
    parts = [f"{label} {fmt.format(metrics[key])}" for key, label, fmt in METRIC_LABELS if metrics.get(key) is not None]
    sources = [  # dataset.mix: each source's own evaluation loss and the rows it gave
        f"{source['name']} {source['evalLoss']:.4f} ({source.get('trainRows', 0)} training rows)"
        for source in metrics.get("sources") or []
        if source.get("evalLoss") is not None
    ]
    if sources:
        parts.append(f"eval loss per source: {'; '.join(sources)}")
    # dataset.augmentation: the training rows each kind added (details in metrics.json and the model card)
    parts += [f"{kind.get('added', 0)} rows added by {kind.get('kind')}" for kind in metrics.get("augmentation") or []]
    return ", ".join(parts) if parts else "no metrics reported"


@dataclass
class ServedModel:
    """One running local server."""

    name: str
    port: int
    process: subprocess.Popen
    models: list[str]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class LocalRun:
    """One local run: its files, its folders and the servers it started (stopped on exit)."""

    files: list[Path]
    workdir: Path = Path(".kubetune")
    claims: list[tuple[str, Path]] = field(default_factory=list)
    configmaps: list[tuple[str, Path]] = field(default_factory=list)
    port: int = 8000
    env: dict[str, str] = field(default_factory=dict)
    say: object = print
    bundle: Bundle = field(init=False)
    volumes: LocalVolumes = field(init=False)
    trained: dict[str, TrainResult] = field(default_factory=dict, init=False)
    servers: list[ServedModel] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.bundle = load_bundle(self.files)
        self.volumes = LocalVolumes(self.workdir)
        for claim, folder in self.claims:
            self.volumes.bind_claim(claim, folder)
        for name, folder in self.configmaps:
            self.volumes.bind_configmap(name, folder)

    def __enter__(self) -> LocalRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def train_all(self) -> None:
        for job in self.bundle.jobs:
            result = train_locally(job, self.volumes, self.workdir, self.env, say=self.say)
            self.trained[job.metadata.name] = result
            self.say(f"FineTuneJob {job.metadata.name} {result.how}: {format_metrics(result.metrics)}")
            self.say(f"  adapter: {result.adapter_dir}")
            for what, path in result.result_files():
                self.say(f"  {what}: {path}")

    def serve_all(self) -> None:
        for offset, serve in enumerate(self.bundle.serves):
            config = local_serve_config(serve, self.bundle, self.trained)
            port = self.port + offset
            self.say(f"ModelServe {serve.metadata.name}: starting the server on 127.0.0.1:{port} ...")
            process = start_server(config, self.volumes, self.workdir, port, self.env, serve.metadata.name)
            models = [config.served_base_name] + [adapter.name for adapter in config.adapters]
            self.servers.append(ServedModel(serve.metadata.name, port, process, models))
            self.say(
                f"ModelServe {serve.metadata.name} is ready at http://127.0.0.1:{port}/v1 (models: {', '.join(models)})"
            )
            self.say(usage_hint(port, models[-1]))

    def wait(self) -> None:
        """Block until every server exits (Ctrl-C stops them)."""
        for server in self.servers:
            server.process.wait()

    def stop(self) -> None:
        for server in self.servers:
            if server.process.poll() is None:
                server.process.terminate()
                try:
                    server.process.wait(timeout=40)
                except subprocess.TimeoutExpired:
                    server.process.kill()
        self.servers.clear()

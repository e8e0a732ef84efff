"""The FineTuneJob kind: what to fine-tune, on what data, how, and where the adapter goes."""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import Field, model_validator

from .augmentation import AugmentationResult, AugmentationSpec
from .base import (
    ApiModel,
    DataKey,
    Dns1123Label,
    ExtendedResourceName,
    HfRepoId,
    HttpsUrl,
    NodeSelector,
    ObjectName,
    Quantity,
    ShortText,
    nested_default,
)
from .conditions import Condition
from .queueing import WorkloadMetadata
from .sources import ModelSource, PvcPath, QuantizationSpec, SecretKeyRef, Toleration, exactly_one
from .storage import ModelCacheSpec
from .tracking import TrackingSpec
from .training_controls import EarlyStoppingSpec, LossWeightsSpec, StopReason

DEFAULT_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ALL_LINEAR = "all-linear"

DatasetFormat = Literal["alpaca", "chat", "qa", "text"]
Method = Literal["lora", "qlora", "full"]
FineTuneJobPhase = Literal["Pending", "Queued", "Running", "Succeeded", "Failed", "Suspended"]
# Fields that say where, when and how observably the trainer runs, not what it trains: left out of the spec's
# fingerprint (a checkpoint or adapter stays valid whichever queue, cache, grace period or tracker the run used).
PLACEMENT_FIELDS = frozenset(
    {
        "queue_name",
        "workload_metadata",
        "runtime_name",
        "tracking",
        "model_cache",
        "termination_grace_period_seconds",
    }
)
# Fields added after the first release whose default trains exactly as before they existed: left out of the
# fingerprint while they hold that default, so adapters and checkpoints made before an upgrade stay valid. A new
# recipe field whose default changes nothing belongs here (path from the spec root, in wire names).
NEUTRAL_DEFAULTS: dict[tuple[str, ...], object] = {
    ("resources", "nodes"): 1,
    ("lora", "rslora"): False,
    ("lora", "dora"): False,
    ("training", "ligerKernel"): False,
    ("training", "neftuneNoiseAlpha"): None,
    ("training", "loadBestModelAtEnd"): False,
    ("dataset", "mix"): None,
    ("dataset", "mixUntil"): None,
    ("training", "earlyStopping"): None,
    ("training", "lossWeights"): None,
    ("dataset", "augmentation"): None,
    ("evaluation", "humanEvalSamples"): 0,
}


class HfDataset(ApiModel):
    """A dataset on the Hugging Face Hub."""

    name: HfRepoId
    """Repository id of the dataset, as 'org/name'."""

    config: ShortText | None = None
    """Dataset configuration (subset) name, when the dataset has several."""

    split: ShortText = "train"
    """Split to train on."""

    revision: ShortText | None = None
    """Branch, tag or commit of the dataset repository."""


class ConfigMapKey(ApiModel):
    """One key of a ConfigMap in the same namespace, holding a JSONL, JSON or CSV file."""

    name: ObjectName
    """Name of the ConfigMap."""

    key: DataKey
    """Key inside the ConfigMap; its extension (.jsonl, .json, .csv) tells the file type."""


SOURCE_FIELDS = ("hf", "pvc", "config_map", "url")
MAX_MIX_SOURCES = 16
MixUntil = Literal["first_exhausted", "all_exhausted", "all_exhausted_without_replacement"]


class DatasetSource(ApiModel):
    """Where rows come from: exactly one of hf, pvc, configMap, url (shared by a dataset and each mix source)."""

    hf: HfDataset | None = None
    """A Hugging Face Hub dataset."""

    pvc: PvcPath | None = None
    """A JSONL, JSON, CSV or Parquet file (or a folder of them) on a PersistentVolumeClaim."""

    config_map: ConfigMapKey | None = None
    """A small dataset stored in a ConfigMap key (ConfigMaps hold at most 1 MiB)."""

    url: HttpsUrl | None = None
    """An https:// address of a JSONL, JSON, CSV or Parquet file."""

    def describe(self) -> str:
        """A short label of the source for logs, manifests and model cards."""
        if self.hf is not None:
            return f"hf:{self.hf.name}"
        if self.pvc is not None:
            return f"pvc:{self.pvc.claim_name}/{self.pvc.path}".rstrip("/")
        if self.config_map is not None:
            return f"configmap:{self.config_map.name}/{self.config_map.key}"
        return self.url or ""


class MixSource(DatasetSource):
    """One source of a multi-task mix: where its rows come from, how they are formatted and prefixed, how often
    they are drawn, and how many of them are held out for its own evaluation."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "[has(self.hf), has(self.pvc), has(self.configMap), has(self.url)].exists_one(x, x)",
                    "message": "each mix source needs exactly one of hf, pvc, configMap, url",
                    "messageExpression": "'mix source ' + self.name + ' needs exactly one of hf, pvc, configMap, url'",
                },
                {
                    "rule": "!has(self.evalSplit) || has(self.hf)",
                    "message": "evalSplit of a mix source is only valid with its hf",
                    "messageExpression": "'mix source ' + self.name + ': evalSplit is only valid with hf'",
                },
            ]
        }
    }

    name: Dns1123Label
    """Name of the source (a DNS label, unique in the mix): its evaluation loss is reported as eval_<name>_loss
    and in status.metrics.sources."""

    format: DatasetFormat | None = None
    """Row format of this source; empty uses dataset.format, else it is detected from the columns. Sources must
    give rows of one kind: chat with chat, text with text, alpaca and qa together."""

    prompt_template: str | None = Field(default=None, max_length=8192)
    """Prompt template of this source (as dataset.promptTemplate); empty uses dataset.promptTemplate."""

    weight: float = Field(default=1.0, gt=0, le=1_000_000)
    """Relative sampling weight: each training row of the mix is drawn from this source with probability
    weight / (sum of all weights)."""

    task_prefix: str | None = Field(default=None, max_length=1024)
    """Text put verbatim in front of each row's instruction (alpaca), question (qa), first user message (chat)
    or text (text), in training and evaluation rows alike, never in the answer; include the separator, e.g.
    'summarize: '. Serve prompts must carry it too."""

    eval_fraction: float | None = Field(default=None, ge=0.0, lt=0.5)
    """Fraction of this source's rows held out for its evaluation; empty uses dataset.evalFraction; 0 leaves the
    source out of evaluation."""

    eval_split: ShortText | None = None
    """A named split of this source's Hub dataset to evaluate on, instead of holding out evalFraction."""

    max_samples: int | None = Field(default=None, ge=1)
    """Use at most this many of this source's training rows (the first ones after shuffling with the seed),
    before mixing."""

    @model_validator(mode="after")
    def _one_source(self) -> MixSource:
        exactly_one(self, SOURCE_FIELDS, f"mix source {self.name!r}")
        if self.eval_split is not None and self.hf is None:
            raise ValueError(f"mix source {self.name!r}: evalSplit is only valid with hf; use evalFraction")
        return self


class DatasetSpec(DatasetSource):
    """Training data: exactly one source (or a mix of several), its row format, and how the evaluation rows are
    chosen."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "[has(self.hf), has(self.pvc), has(self.configMap), has(self.url), has(self.mix)]"
                    ".exists_one(x, x)",
                    "message": "dataset needs exactly one of hf, pvc, configMap, url, mix",
                },
                {
                    "rule": "!has(self.evalSplit) || has(self.hf)",
                    "message": "dataset.evalSplit is only valid with dataset.hf",
                },
                {
                    "rule": "!has(self.mixUntil) || has(self.mix)",
                    "message": "dataset.mixUntil is only valid with dataset.mix",
                },
            ]
        }
    }

    mix: list[MixSource] | None = Field(
        default=None,
        min_length=2,
        max_length=MAX_MIX_SOURCES,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.all(a, self.exists_one(b, b.name == a.name))",
                    "message": "the names of dataset.mix sources must be unique",
                }
            ]
        },
    )
    """Several sources trained together (multi-task), instead of hf, pvc, configMap or url: each training row is
    drawn from one source with the probability of its weight, in an order fixed by training.seed. Each source
    keeps its own evaluation rows, reported per source. Below, skipInvalidRows applies to every source, format,
    promptTemplate and evalFraction to those that do not set their own, and maxSamples caps the mixed rows."""

    mix_until: MixUntil | None = None
    """When the mix ends (datasets.interleave_datasets stopping_strategy). first_exhausted (empty): when a
    source runs out; every row is drawn at most once and the weights hold exactly, so a mix has about
    min(rows of a source / its probability) rows per epoch and large sources are cut. all_exhausted: when every
    source has been drawn whole; small sources repeat to keep the weights, about max(rows / probability) rows.
    all_exhausted_without_replacement: every row exactly once (sum of the sources' rows); the weights hold only
    until a source runs out. The rows taken from each source are reported."""

    format: DatasetFormat | None = None
    """Row format: alpaca (instruction/input/output), chat (messages), qa (question/answer) or text.
    Detected from the columns when empty."""

    prompt_template: str | None = Field(default=None, max_length=8192)
    """Python format string for alpaca and qa prompts, with {instruction} and {input}, or {question}.
    Empty uses the built-in '### Instruction / ### Input / ### Response' layout."""

    eval_fraction: float = Field(default=0.1, ge=0.0, lt=0.5)
    """Fraction of rows held out for evaluation, chosen with the training seed; 0 disables evaluation.
    Not used when evalSplit is set. With mix, each source holds out its own fraction."""

    eval_split: ShortText | None = None
    """A named split of the Hub dataset to evaluate on, instead of holding out evalFraction."""

    max_samples: int | None = Field(default=None, ge=1)
    """Use at most this many training rows (the first ones after shuffling with the seed); with mix, of the
    mixed rows."""

    skip_invalid_rows: bool = False
    """Skip rows that do not fit the format (counted and reported) instead of failing the job."""

    augmentation: AugmentationSpec | None = None
    """Generate more training rows before training by paraphrase and back-translation of the prompts of the
    training rows (evaluation rows are never augmented); empty: off."""

    @model_validator(mode="after")
    def _one_source(self) -> DatasetSpec:
        exactly_one(self, (*SOURCE_FIELDS, "mix"), "dataset")
        if self.eval_split is not None and self.hf is None:
            raise ValueError("evalSplit is only valid with dataset.hf; use evalFraction for other sources")
        if self.mix_until is not None and self.mix is None:
            raise ValueError("mixUntil is only valid with dataset.mix")
        names = [source.name for source in self.mix or []]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"mix source names must be unique; repeated: {', '.join(repeated)}")
        return self

    def describe(self) -> str:
        if self.mix is not None:
            return "mix:" + ",".join(source.name for source in self.mix)
        return super().describe()

    def sources(self) -> list[DatasetSource]:
        """Every source the job reads: the mix's, or the dataset itself (for mounts and checks)."""
        return list(self.mix) if self.mix is not None else [self]


class LoraSpec(ApiModel):
    """LoRA adapter shape: low-rank matrices added to the chosen layers, the only weights trained."""

    r: int = Field(default=16, ge=1, le=1024)
    """Rank of the adapter matrices. Higher learns more and costs more memory (8-64 is typical)."""

    alpha: float = Field(default=32, gt=0, le=4096)
    """Scaling numerator: updates are scaled by alpha / r. Twice r is a common choice."""

    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    """Dropout on the adapter input during training, against overfitting."""

    target_modules: list[str] = Field(
        default_factory=lambda: list(DEFAULT_TARGET_MODULES),
        min_length=1,
        max_length=64,
        json_schema_extra={"default": DEFAULT_TARGET_MODULES},
    )
    """Layer names to adapt. The default covers the attention and MLP projections of Llama-style models;
    ['all-linear'] adapts every linear layer except the output head."""

    bias: Literal["none", "all", "lora_only"] = "none"
    """Which biases to train alongside the adapter."""

    layers_to_transform: list[int] | None = Field(default=None, min_length=1, max_length=512)
    """Adapt only these decoder layers (0-based indices); empty adapts every layer. Adapting only the top
    layers trains several times faster, since the backward pass stops at the lowest adapted layer."""

    rslora: bool = False
    """Rank-stabilized LoRA (PEFT use_rslora): scale updates by alpha / sqrt(r) instead of alpha / r, so that
    high ranks (64 and more) still learn; keep alpha when raising r."""

    dora: bool = False
    """Weight-decomposed LoRA (PEFT use_dora): trains magnitude and direction apart, often closer to full
    fine-tuning at low rank; slower per step and more memory than plain LoRA."""

    @model_validator(mode="after")
    def _modules(self) -> LoraSpec:
        for name in self.target_modules:
            if not name or len(name) > 128 or any(ch.isspace() for ch in name):
                raise ValueError(f"targetModules entry {name!r} must be a non-empty layer name without spaces")
        if ALL_LINEAR in self.target_modules and len(self.target_modules) > 1:
            raise ValueError("targetModules: 'all-linear' must be the only entry when used")
        layers = self.layers_to_transform or []
        if any(index < 0 for index in layers) or len(set(layers)) != len(layers):
            raise ValueError(f"layersToTransform must be distinct layer indices >= 0, got {layers}")
        return self


Scheduler = Literal["cosine", "linear", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial"]
Optimizer = Literal[
    "adamw_torch", "adamw_torch_fused", "paged_adamw_32bit", "paged_adamw_8bit", "adamw_8bit", "adafactor", "sgd"
]
Precision = Literal["auto", "bf16", "fp16", "fp32"]


class TrainingSpec(ApiModel):
    """Optimisation hyperparameters. Effective batch = batchSize x gradientAccumulationSteps x GPUs."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.loadBestModelAtEnd) || !self.loadBestModelAtEnd || (has(self.evalSteps) && "
                    "(!has(self.saveSteps) || self.saveSteps % self.evalSteps == 0))",
                    "message": "loadBestModelAtEnd needs evalSteps and saveSteps a multiple of it",
                },
                {
                    "rule": "!has(self.earlyStopping) || (has(self.evalSteps) && "
                    "(!has(self.saveSteps) || self.saveSteps % self.evalSteps == 0))",
                    "message": "earlyStopping needs evalSteps and saveSteps a multiple of it (it publishes the best "
                    "checkpoint)",
                },
                {
                    "rule": "!has(self.lossWeights) || !has(self.ligerKernel) || !self.ligerKernel",
                    "message": "lossWeights and ligerKernel cannot be combined (Liger's fused loss builds no logits "
                    "to weigh)",
                },
            ]
        }
    }

    epochs: float = Field(default=3, gt=0, le=1000)
    """Passes over the training data (fractions allowed)."""

    max_steps: int | None = Field(default=None, ge=1)
    """Stop after this many optimizer steps, overriding epochs."""

    learning_rate: float = Field(default=2e-4, gt=0, lt=1)
    """Peak learning rate."""

    batch_size: int = Field(default=4, ge=1, le=4096)
    """Rows per device per forward pass. Lower it first when you run out of GPU memory."""

    gradient_accumulation_steps: int = Field(default=4, ge=1, le=4096)
    """Forward passes summed into one optimizer step; raise it to keep the effective batch when lowering batchSize."""

    max_seq_length: int = Field(default=512, ge=16, le=131072)
    """Longest tokenized row; longer rows are truncated. Shorter saves memory."""

    warmup_ratio: float = Field(default=0.03, ge=0, lt=1)
    """Fraction of steps over which the learning rate ramps up from zero."""

    scheduler: Scheduler = "cosine"
    """Learning-rate schedule after warmup."""

    optimizer: Optimizer = "adamw_torch"
    """Optimizer. paged_adamw_32bit / paged_adamw_8bit (bitsandbytes, GPU) save memory for QLoRA."""

    weight_decay: float = Field(default=0.0, ge=0, lt=1)
    """Decoupled weight decay on the adapter weights, against overfitting."""

    max_grad_norm: float = Field(default=1.0, gt=0, le=1000)
    """Gradients are clipped to this norm; lower (e.g. 0.3) for unstable runs."""

    seed: int = Field(default=42, ge=0, le=2**31 - 1)
    """Seed for shuffling, the evaluation split and adapter initialisation."""

    precision: Precision = "auto"
    """Compute precision: auto picks bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU."""

    gradient_checkpointing: bool | None = None
    """Recompute activations in the backward pass: about 20-30% slower, far less activation memory. Empty turns
    it on for GPU training (LoRA and QLoRA: activations, not the frozen weights, limit batch size and length)
    and off on CPU, where memory is rarely the limit and it only costs time (+18% measured)."""

    packing: bool = False
    """Pack several rows into each maxSeqLength sequence, so no compute goes to padding. Pays on GPUs whose
    attention keeps packed rows apart without padding (flash-attention); on CPU it was 45% slower per
    token than dynamic padding, which already avoids most padding on short rows."""

    padding_free: bool = False
    """Concatenate the batch without padding (needs a flash-attention capable model on GPU)."""

    completion_only_loss: bool = True
    """Train only on the answer tokens for alpaca, qa and chat data (ignored for text)."""

    eval_steps: int | None = Field(default=None, ge=1)
    """Evaluate every this many steps; empty evaluates at the end of each epoch."""

    save_steps: int = Field(default=100, ge=1)
    """Write a checkpoint every this many steps; a preempted job resumes from the newest."""

    save_total_limit: int = Field(default=3, ge=1, le=100)
    """Checkpoints kept on the volume; older ones are deleted."""

    logging_steps: int = Field(default=10, ge=1)
    """Record loss and learning rate every this many steps."""

    load_best_model_at_end: bool = False
    """Publish the checkpoint with the lowest evaluation loss instead of the last one. Needs evalSteps, with
    saveSteps a multiple of it (every evaluated step then has a checkpoint to go back to)."""

    liger_kernel: bool = False
    """Liger's fused Triton kernels (TRL use_liger_kernel: RMSNorm, RoPE, SwiGLU, fused linear cross-entropy)
    for supported architectures (Llama, Mistral, Qwen, Gemma, ...): less GPU memory, often faster. GPU only."""

    neftune_noise_alpha: float | None = Field(default=None, gt=0, le=100)
    """NEFTune: add uniform noise of this scale to the input embeddings while training (TRL neftune_noise_alpha;
    5 is the paper's value), which often improves instruction following on small datasets. Empty: off."""

    early_stopping: EarlyStoppingSpec | None = None
    """Stop when the evaluation loss has not improved for `patience` evaluations and publish the best checkpoint
    (implies loadBestModelAtEnd). Needs evaluation rows and evalSteps, with saveSteps a multiple of it. Empty: off."""

    loss_weights: LossWeightsSpec | None = None
    """Make the listed words count more in the training loss. Empty: every answer token weighs the same."""

    @model_validator(mode="after")
    def _training_controls(self) -> TrainingSpec:
        if self.early_stopping is not None and (self.eval_steps is None or self.save_steps % self.eval_steps):
            raise ValueError(
                "earlyStopping needs evalSteps and saveSteps a multiple of it (it publishes the best checkpoint; got "
                f"evalSteps {self.eval_steps}, saveSteps {self.save_steps})"
            )
        if self.loss_weights is not None and self.liger_kernel:
            raise ValueError("lossWeights and ligerKernel cannot be combined (Liger's fused loss builds no logits)")
        return self

    @model_validator(mode="after")
    def _packing(self) -> TrainingSpec:
        if self.packing and self.padding_free:
            raise ValueError("packing and paddingFree are alternatives: set at most one of them")
        if self.load_best_model_at_end and (self.eval_steps is None or self.save_steps % self.eval_steps):
            raise ValueError(
                "loadBestModelAtEnd needs evalSteps and saveSteps a multiple of it "
                f"(got evalSteps {self.eval_steps}, saveSteps {self.save_steps})"
            )
        return self


class EvaluationSpec(ApiModel):
    """Optional generation-based evaluation after training, on held-out rows."""

    generation_samples: int = Field(default=0, ge=0, le=10000)
    """Generate answers for up to this many evaluation rows and score them with ROUGE-L and BLEU; 0 skips it."""

    max_new_tokens: int = Field(default=128, ge=1, le=4096)
    """Longest generated answer during this evaluation (and of the human-evaluation export)."""

    human_eval_samples: int = Field(default=0, ge=0, le=1000)
    """Write `human-eval.csv` beside the adapter on the output volume: this many held-out (evaluation) prompts,
    chosen by training.seed, with the reference answer, the base model's and the fine-tuned model's greedy answers,
    and empty `rating` and `comment` columns for people to fill in. Needs prompt/answer data and evaluation rows;
    0 writes nothing. `kubetune results` fetches it (the first rows that fit the report's size budget)."""


class ResourceSpec(ApiModel):
    """Compute for the trainer pod and where it may run."""

    gpus: int = Field(default=1, ge=0, le=64)
    """GPUs per pod, requested as `gpuResourceName`, each running one trainer process (torchrun); 0 trains on CPU
    (tiny models only)."""

    nodes: int = Field(default=1, ge=1, le=64)
    """Pods (nodes) of the run, each with `gpus` GPUs: more than 1 runs an Indexed Job whose pods meet through a
    headless Service (torchrun rendezvous at pod 0). Needs an output volume all pods can mount (ReadWriteMany),
    and all pods started together: use Kueue (spec.queueName), which admits the Job's pods all or none."""

    gpu_resource_name: ExtendedResourceName = "nvidia.com/gpu"
    """Extended resource name of the GPU (e.g. nvidia.com/gpu, amd.com/gpu, or a MIG profile)."""

    cpu: Quantity | None = None
    """CPU request and limit, e.g. '8' or '7500m'."""

    memory: Quantity | None = None
    """Memory request and limit, e.g. '64Gi'. Loading a model needs about its size in host memory."""

    shm_size: Quantity = "2Gi"
    """Size of the memory-backed /dev/shm (data loader workers and NCCL need more than the 64 MiB default)."""

    node_selector: NodeSelector = Field(default_factory=dict)
    """Node labels the pod must match, e.g. {'nvidia.com/gpu.product': 'NVIDIA-A100-SXM4-80GB'}."""

    tolerations: list[Toleration] = Field(default_factory=list, max_length=64)
    """Taints the pod tolerates (GPU nodes are often tainted)."""

    priority_class_name: ObjectName | None = None
    """PriorityClass of the pod; lower priority jobs can be preempted and resume from checkpoints."""


class HubPushSpec(ApiModel):
    """Push the finished adapter to the Hugging Face Hub."""

    repo: HfRepoId
    """Target repository id, as 'org/name'; created if missing."""

    private: bool = True
    """Create the repository as private."""

    token_secret_ref: SecretKeyRef
    """Secret holding a Hub token with write access."""


class OutputVolumeSpec(PvcPath):
    """An existing PersistentVolumeClaim to write the adapter to."""


class OutputSpec(ApiModel):
    """Where the adapter, checkpoints and metrics are written."""

    pvc: OutputVolumeSpec | None = None
    """An existing claim to write into; empty makes the operator create one named after the job."""

    storage_size: Quantity = "10Gi"
    """Size of the claim the operator creates (checkpoints of large models need more)."""

    storage_class_name: ObjectName | None = None
    """StorageClass of the created claim; empty uses the cluster default."""

    access_mode: Literal["ReadWriteOnce", "ReadWriteMany"] = "ReadWriteOnce"
    """Access mode of the created claim. ReadWriteMany (NFS, CephFS, EFS, Filestore) lets server replicas on
    several nodes mount the adapter; ReadWriteOnce volumes attach to one node at a time."""

    keep: bool = False
    """Keep the created claim (and the adapter on it) when the FineTuneJob is deleted."""

    hub: HubPushSpec | None = None
    """Also push the adapter to the Hugging Face Hub after a successful run."""


class FineTuneJobSpec(ApiModel):
    """Desired state of a FineTuneJob. Immutable after creation, except `suspend`."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "self.method == 'qlora' ? has(self.quantization) : !has(self.quantization)",
                    "message": "quantization is required with method qlora and not allowed with methods lora and full",
                },
                {
                    "rule": "!has(self.training) || !has(self.training.earlyStopping) || has(self.dataset.evalSplit) "
                    "|| !has(self.dataset.evalFraction) || self.dataset.evalFraction > 0.0",
                    "message": "training.earlyStopping needs evaluation rows: dataset.evalFraction above 0 or "
                    "dataset.evalSplit",
                },
            ]
        }
    }

    base_model: ModelSource
    """The model to fine-tune."""

    dataset: DatasetSpec
    """The training data."""

    method: Method = "lora"
    """lora trains an adapter on the full-precision base; qlora on a 4/8-bit quantized base (less memory); full
    trains every weight of a small model and writes a complete model folder (servable as a ModelServe's baseModel).
    full needs about 16 bytes per parameter with AdamW plus activations on each GPU: the trainer estimates it before
    loading the model and refuses (InvalidInput) when one GPU cannot hold it. Use a lower learningRate (e.g. 2e-5)."""

    lora: LoraSpec = nested_default(LoraSpec)
    """Adapter shape (not used with method full)."""

    quantization: QuantizationSpec | None = None
    """Base-model quantization; required with method qlora, not allowed with lora."""

    training: TrainingSpec = nested_default(TrainingSpec)
    """Hyperparameters."""

    evaluation: EvaluationSpec = nested_default(EvaluationSpec)
    """Extra evaluation after training."""

    resources: ResourceSpec = nested_default(ResourceSpec)
    """Compute and placement of the trainer pod."""

    output: OutputSpec = nested_default(OutputSpec)
    """Where results go."""

    tracking: TrackingSpec = nested_default(TrackingSpec)
    """Experiment tracking: TensorBoard files on the output volume (default), MLflow, Weights & Biases."""

    image: ShortText | None = None
    """Trainer image override; empty uses the operator's configured trainer image."""

    model_cache: ModelCacheSpec | None = None
    """Where a Hub base model (and a Hub dataset) is downloaded: the namespace's shared model cache claim, or a
    size-limited scratch volume of the trainer pod; empty follows the operator's defaults."""

    backoff_limit: int = Field(default=2, ge=0, le=100)
    """Pod failures retried before the job fails (each retry resumes from the newest checkpoint)."""

    active_deadline_seconds: int | None = Field(default=None, ge=1)
    """Fail the job when it runs longer than this."""

    termination_grace_period_seconds: int = Field(default=120, ge=10, le=3600)
    """Seconds a trainer pod gets after SIGTERM (spot preemption, eviction, node drain) before it is killed. The
    trainer finishes the optimizer step in progress, saves a checkpoint and exits, and the retry resumes there:
    allow the time of one optimizer step plus one checkpoint save (spot nodes may give less in total)."""

    ttl_seconds_after_finished: int | None = Field(default=None, ge=0)
    """Delete the trainer Job and pods this long after it finishes; the FineTuneJob and its output stay."""

    suspend: bool = False
    """Stop the trainer (its pods are deleted) and keep the checkpoints; set false again to resume."""

    queue_name: ObjectName | None = None
    """Kueue LocalQueue to submit the trainer Job to (label kueue.x-k8s.io/queue-name). Kueue then decides when it
    runs (admits it by unsuspending it) and may preempt it (suspends it; it resumes from its newest checkpoint).
    Empty: no queue label, the Job starts at once."""

    workload_metadata: WorkloadMetadata | None = None
    """Labels and annotations for the trainer Job and its pods (cost labels, Kueue's priority class)."""

    runtime_name: ObjectName | None = None
    """FineTuneRuntime (cluster-scoped, owned by the platform admins) whose images, GPU pool, limits and policy
    apply; empty uses the runtime whose defaultForNamespaces lists this namespace, else the operator's default
    runtime, if one is configured."""

    def fingerprint(self) -> str:
        """Stable hash of the whole spec with defaults, without placement (queue, pass-through metadata): equal
        fingerprints mean the same training run. Fields of NEUTRAL_DEFAULTS at their default are left out, so
        specs from before those fields existed keep their hash."""
        wire = self.model_dump(mode="json", by_alias=True, exclude=set(PLACEMENT_FIELDS))
        for path, neutral in NEUTRAL_DEFAULTS.items():
            *parents, leaf = path
            holder = wire
            for key in parents:
                holder = holder.get(key) or {}
            if leaf in holder and holder[leaf] == neutral:
                del holder[leaf]
        canonical = json.dumps(wire, sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()

    @model_validator(mode="after")
    def _shared_output_for_nodes(self) -> FineTuneJobSpec:
        if self.resources.nodes > 1 and self.output.pvc is None and self.output.access_mode != "ReadWriteMany":
            raise ValueError(
                f"resources.nodes {self.resources.nodes} needs an output volume every pod can mount: set "
                "output.accessMode: ReadWriteMany (or output.pvc to an existing ReadWriteMany claim)"
            )
        return self

    @model_validator(mode="after")
    def _evaluation_for_early_stopping(self) -> FineTuneJobSpec:
        no_eval_rows = self.dataset.eval_split is None and not self.dataset.eval_fraction
        if self.training.early_stopping is not None and no_eval_rows:
            raise ValueError(
                "training.earlyStopping needs evaluation rows: dataset.evalFraction above 0 or dataset.evalSplit"
            )
        return self

    @model_validator(mode="after")
    def _quantization_matches_method(self) -> FineTuneJobSpec:
        if self.method == "qlora" and self.quantization is None:
            raise ValueError(
                "method qlora requires quantization (e.g. quantization: {bits: 4, type: nf4}); "
                "use method lora to train on the full-precision base"
            )
        if self.method != "qlora" and self.quantization is not None:
            raise ValueError(f"quantization is only allowed with method qlora (got method {self.method})")
        return self


class Progress(ApiModel):
    """Training progress, updated by the trainer every few seconds."""

    step: int = Field(default=0, ge=0)
    """Optimizer steps done."""

    total_steps: int = Field(default=0, ge=0)
    """Optimizer steps planned."""

    epoch: float = Field(default=0, ge=0)
    """Epochs done (fractional)."""

    percent: int = Field(default=0, ge=0, le=100)
    """step / totalSteps in percent."""

    loss: float | None = None
    """Most recent training loss."""

    eval_loss: float | None = None
    """Most recent evaluation loss."""

    eta_seconds: int | None = Field(default=None, ge=0)
    """Estimated seconds to the end of training."""

    updated: str | None = None
    """When the trainer last reported (RFC 3339)."""


class SourceMetrics(ApiModel):
    """What one source of dataset.mix contributed and how the model does on its evaluation rows."""

    name: Dns1123Label
    """The mix source's name."""

    probability: float = Field(ge=0, le=1)
    """Its sampling probability: weight / sum of the weights."""

    train_rows: int = Field(ge=0)
    """Training rows drawn from it into the mix (one epoch; a chat conversation counts once)."""

    eval_rows: int = Field(default=0, ge=0)
    """Its evaluation rows."""

    eval_loss: float | None = None
    """Loss on its evaluation rows at the end (eval_<name>_loss in the trainer's logs)."""


class TrainingMetrics(ApiModel):
    """Final metrics of a finished run (also in metrics.json next to the adapter)."""

    train_loss: float | None = None
    """Mean training loss over the run."""

    eval_loss: float | None = None
    """Loss on the evaluation rows at the end; with dataset.mix, the mean of the sources' evaluation losses
    weighted by their evaluation rows (what one pass over all of them gives)."""

    perplexity: float | None = None
    """exp(evalLoss)."""

    steps: int | None = None
    """Optimizer steps run."""

    train_tokens: int | None = None
    """Loss-bearing tokens seen in training."""

    tokens_per_second: float | None = None
    """Training throughput in loss-bearing tokens per second."""

    wall_seconds: float | None = None
    """Training wall time."""

    peak_memory_bytes: int | None = None
    """Peak accelerator (or host) memory."""

    rouge_l: float | None = None
    """ROUGE-L F1 of generated answers (when evaluation.generationSamples > 0)."""

    bleu: float | None = None
    """BLEU of generated answers (when evaluation.generationSamples > 0)."""

    generation_metrics: str | None = Field(default=None, max_length=1024)
    """How rougeL and bleu were computed (tokenization, BLEU variant), when they were."""

    truncated_rows: int | None = Field(default=None, ge=0)
    """Training and evaluation rows cut to training.maxSeqLength (trained on the part that fits)."""

    dropped_rows: int | None = Field(default=None, ge=0)
    """Rows dropped because training.maxSeqLength left no answer token (their prompt alone fills it)."""

    skipped_rows: int | None = Field(default=None, ge=0)
    """Rows skipped because they do not fit the dataset format (dataset.skipInvalidRows)."""

    sources: list[SourceMetrics] | None = Field(default=None, max_length=MAX_MIX_SOURCES)
    """Per source of dataset.mix: its probability, rows and evaluation loss."""

    published_step: int | None = Field(default=None, ge=0)
    """Step of the published weights: the checkpoint with the lowest evalLoss with training.loadBestModelAtEnd
    (evalLoss is then that checkpoint's), else the last step."""

    best_step: int | None = Field(default=None, ge=0)
    """Evaluated step with the lowest evaluation loss; empty without evaluation during training. With earlyStopping
    or loadBestModelAtEnd it is the published step when saveSteps equals evalSteps (else the best saved one is)."""

    stop_reason: StopReason | None = None
    """Why training ended: EarlyStopped (training.earlyStopping), MaxSteps (training.maxSteps reached) or Epochs
    (training.epochs completed)."""

    stop_message: str | None = Field(default=None, max_length=1024)
    """Why training ended, in words (e.g. how long the evaluation loss did not improve, and its best value)."""

    augmentation: list[AugmentationResult] | None = Field(default=None, max_length=2)
    """Rows added to the training rows by dataset.augmentation, per kind, and the generated texts dropped."""


class OutputStatus(ApiModel):
    """Where the finished adapter is, for ModelServe and for people."""

    pvc: PvcPath | None = None
    """Claim and folder holding the adapter (adapter_config.json, adapter_model.safetensors), or with method full
    the whole model (config.json, model.safetensors) that a ModelServe serves as its baseModel.pvc."""

    base_model: ModelSource | None = None
    """The base model the adapter was trained on."""

    method: Method | None = None
    """lora, qlora or full."""

    hub_repo: HfRepoId | None = None
    """Hub repository the adapter was pushed to, if any."""


class FineTuneJobStatus(ApiModel):
    """Observed state of a FineTuneJob, written by the operator and the trainer through the status subresource."""

    phase: FineTuneJobPhase = "Pending"
    """Pending, Queued (waiting in its Kueue queue, also after a preemption), Running, Succeeded, Failed or
    Suspended."""

    conditions: list[Condition] = Field(default_factory=list, max_length=32)
    """Validated, JobCreated, Running, Succeeded, Failed (and Suspended; Admitted with a queue) with reasons."""

    observed_generation: int | None = Field(default=None, ge=0)
    """The metadata.generation the status describes."""

    progress: Progress | None = None
    """Live training progress."""

    metrics: TrainingMetrics | None = None
    """Final metrics."""

    output: OutputStatus | None = None
    """Location of the finished adapter."""

    job_name: ObjectName | None = None
    """Name of the batch/v1 Job running the trainer."""

    start_time: str | None = None
    """When training started (RFC 3339)."""

    completion_time: str | None = None
    """When the job finished (RFC 3339)."""

    message: str | None = Field(default=None, max_length=32768)
    """Latest human-readable message."""

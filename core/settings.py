"""The one settings object. Every knob is an env var prefixed ``GUARDTUNE_``.

The defaults are the *embedded* stack: SQLite, a local folder as object store and
a Celery broker that needs no server, all under ``GUARDTUNE_HOME`` (``./var``).
Production points the URLs at Postgres, Redis and S3 and sets ``GUARDTUNE_ENV``.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.datasets import MAX_ERRORS, MAX_EXAMPLE_CHARS, MAX_EXAMPLES
from core.jobs.config import (
    CHECKPOINT_EVERY,
    DEFAULT_ASR_SOURCE,
    DEFAULT_BASE_MODEL,
    DEFAULT_OBJECTIVE,
    DEFAULT_RISK_WEIGHTING,
    EVAL_BATCH_SIZE,
    EVAL_CONDITION_PROMPTS,
    EVAL_MAX_NEW_TOKENS,
    EVAL_SYSTEM_PROMPTS,
    EVAL_TRIGGERS,
    FLAG_THRESHOLD,
    GATE_MAX_ASR_INCREASE,
    GATE_MAX_OVER_REFUSAL_INCREASE,
    INFER_BATCH_WAIT_MS,
    INFER_MAX_ADAPTERS,
    INFER_MAX_BATCH,
    JUDGE_FALLBACK_SCORE,
    JUDGE_MAX_CONCURRENCY,
    JUDGE_TIMEOUT_S,
    KL_WEIGHT_MAX,
    KL_WEIGHT_MIN,
    PROBE_RISK,
    PROBE_TARGET_RECALL,
    TRIGGER_MIN_RATIO,
    TRIGGER_MIN_SHARE,
    RiskMode,
)
from core.jobs.vocab import AsrSource, Objective, ReferenceMode, RiskWeighting, SafetyMode

INSECURE_SECRET = "dev-insecure-secret-change-me"
# Env vars of settings since renamed: refused, so that an operator's value is never silently dropped.
RENAMED_ENV = {"GUARDTUNE_KL_WEIGHT_LO": "GUARDTUNE_KL_WEIGHT_MIN", "GUARDTUNE_KL_WEIGHT_HI": "GUARDTUNE_KL_WEIGHT_MAX"}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GUARDTUNE_", env_file=None, extra="ignore")

    env: Literal["development", "test", "production"] = "development"
    home: Path = Path("./var")

    # Connections. Empty means "derive the embedded default from home".
    database_url: str = ""
    broker_url: str = ""
    result_backend_url: str = ""
    storage_url: str = ""
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"

    # Security. The secret peppers API-key hashes; the audit signing key signs the audit
    # anchors (empty outside production: derived from the secret). Previous signing keys
    # still verify the anchors they signed (rotation, see README).
    secret_key: str = INSECURE_SECRET
    audit_signing_key: str = ""
    audit_previous_signing_keys: list[str] = Field(default_factory=list)
    # Seconds an API key found valid is trusted without a query (api.keycache); 0: never.
    api_key_cache_s: float = Field(default=5.0, ge=0)

    # HTTP service.
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str = ""
    embedded_worker: bool | None = None  # None: on when the broker is the embedded one
    # Threads serving sync endpoints; the database pool is sized from the same number, so a
    # request holding a thread always finds a connection (see core.db.get_engine).
    api_threads: int = Field(default=40, ge=1, le=1000)
    max_header_bytes: int = Field(default=64 * 1024, ge=1024)  # request line + headers; 431 above

    # Limits.
    max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)  # request body of every route but uploads; 413
    max_file_bytes: int = Field(default=512 * 1024**2, ge=1)  # a file sent in one POST /v1/files (OpenAI's 512 MB); 413
    max_upload_bytes: int = Field(default=8 * 1024**3, ge=1)  # a file assembled from parts through /v1/uploads; 413
    max_concurrent_jobs_per_org: int = 4
    uploads_per_minute: int = Field(60, ge=0)  # file uploads per organization; 0 = unlimited
    job_creations_per_minute: int = Field(60, ge=0)  # fine-tuning job creations per organization; 0 = unlimited
    # Compute bounds of one job, checked at create (400 job_too_large); 0 = unbounded.
    max_job_steps: int = Field(0, ge=0)  # optimizer steps: ceil(examples / batch_size) * n_epochs
    max_job_training_tokens: int = Field(0, ge=0)  # the training file's tokens * n_epochs
    max_storage_bytes_per_org: int = 10 * 1024**3
    validation_max_errors: int = MAX_ERRORS
    max_example_chars: int = MAX_EXAMPLE_CHARS  # per training example (sum of message contents)
    # Per training example, in tokens: the base model's context, capped by this (scan and training).
    max_example_tokens: int = Field(2048, ge=16)
    max_examples: int = MAX_EXAMPLES  # per training file

    # Models.
    model_cache_dir: Path | None = None
    default_base_model: str = DEFAULT_BASE_MODEL
    base_models: list[str] = Field(default_factory=lambda: [DEFAULT_BASE_MODEL])
    device: str = "cpu"
    torch_threads: int | None = Field(None, ge=1)  # torch.set_num_threads in workers; None: torch's default
    # Device memory (safety.memory, safety.batching): padded tokens of one forward batch (training's
    # micro-batches, scan, reference cache, evaluation; None: batch sizes alone), activation
    # checkpointing ("auto": on CUDA) and 4-bit base weights (QLoRA, CUDA only).
    micro_batch_tokens: int | None = Field(None, ge=1)
    activation_checkpointing: bool | Literal["auto"] = "auto"
    quantize: Literal["none", "4bit"] = "none"
    # Memory of the device a worker trains on (core.jobs.memory_plan): jobs that cannot fit are
    # refused at create; workers pick the micro-batch that fits when micro_batch_tokens is unset.
    worker_gpu_memory_gb: float | None = Field(None, gt=0)
    # GPUs a worker owns: above 1, stage train runs each job data-parallel across all of them
    # (worker.pipeline.train.launch_ranks: torchrun, one process per GPU).
    worker_gpus: int = Field(1, ge=1)

    # Job pipeline.
    heartbeat_interval_s: float = 10.0
    stale_job_after_s: float = 300.0
    visibility_timeout_s: int = 3600
    reaper_interval_s: float = 30.0
    max_stage_attempts: int = 3
    retry_backoff_s: float = Field(30.0, ge=0)  # first delay of a stage retried after a transient fault
    # Fair share of the GPU workers (core.dispatch): GPU stages run at once, at most (one per
    # GPU worker process; 0: no dispatcher, every GPU stage goes to the broker's FIFO queue),
    # and the GPU seconds of the window over which organizations are compared.
    gpu_slots: int = Field(1, ge=0)
    gpu_share_window_s: float = Field(86400.0, gt=0)
    # Webhooks (core.webhooks): a delivery is tried at most webhook_max_attempts times, the
    # n-th retry webhook_backoff_s * 2**(n-1) after the previous attempt; each POST waits
    # webhook_timeout_s for the receiver's answer.
    webhook_max_attempts: int = Field(5, ge=1, le=20)
    webhook_backoff_s: float = Field(10.0, ge=0)
    webhook_timeout_s: float = Field(10.0, gt=0)
    # Experiment tracking (worker/pipeline/tracking.py): a job's W&B integration logs with the
    # operator's key (online) or to files under home/wandb (offline), online to the W&B server at
    # wandb_base_url (None: W&B's cloud); an MLflow tracking URI makes every job log there, to
    # the experiment mlflow_experiment.
    wandb_api_key: str | None = None
    wandb_mode: Literal["online", "offline"] = "online"
    wandb_base_url: str | None = None
    mlflow_tracking_uri: str | None = None
    mlflow_experiment: str = "guardtune"
    audit_anchor_every: int = Field(default=100, ge=1)  # an anchor at every N records, besides each head
    audit_anchor_retention_days: int = Field(default=0, ge=0)  # S3 Object Lock (compliance) on anchors; 0: none
    metrics_event_every: int = 1
    estimate_window: int = Field(20, ge=1)  # estimates read the medians of each stage's newest N runs
    checkpoint_every: int = CHECKPOINT_EVERY
    keep_checkpoints: int = Field(3, ge=1)  # a job's newest checkpoints kept (work dir, store, listing)
    max_flagged_fraction: float | None = None  # refuse to train above this flagged share

    # Safety method (the paper's bounds) and the policy bounding what customer keys may ask
    # (api/jobs/safety_policy.py).
    allowed_modes: list[SafetyMode] = Field(default_factory=lambda: [SafetyMode.ADAPTIVE, SafetyMode.CONSTANT])
    kl_weight_min: float = KL_WEIGHT_MIN
    kl_weight_max: float = KL_WEIGHT_MAX
    risk_weighting: RiskWeighting = DEFAULT_RISK_WEIGHTING  # "batch": the paper's batch mean (ablation)
    objective: Objective = DEFAULT_OBJECTIVE  # "bounded": adaptive's weights bound the AdamW step (operator only)
    reference: ReferenceMode = ReferenceMode.CACHED  # KL against the scan's cached top-k, or a forward per step
    reference_topk: int = Field(32, ge=1, le=1024)  # reference log-probs kept per answer token (cached mode)
    flag_threshold: float = FLAG_THRESHOLD
    probe_layers: str = "auto"
    probe_risk: RiskMode = PROBE_RISK  # probe probability -> risk: "binary", "calibrated" or "graded"
    probe_target_recall: float = Field(PROBE_TARGET_RECALL, gt=0, le=1)  # recall kept at the weighting threshold
    context_refusal_drop: float | None = Field(None, gt=0, le=1)  # the scan's context check (unset: off)
    align_options: dict[str, Any] = Field(default_factory=dict)  # overrides of safety.align.AlignConfig
    align_prebuilt: bool = True  # merge a shipped aligned adapter (safety/prebuilt/) whose recipe and base match

    # Judge: an OpenAI-compatible chat endpoint, else a local model; neither means no judge.
    judge_base_url: str | None = None
    judge_api_key: str | None = None
    judge_model: str = "gpt-4.1-mini"
    judge_max_concurrency: int = JUDGE_MAX_CONCURRENCY
    judge_timeout_s: float = JUDGE_TIMEOUT_S
    judge_fallback_score: int = Field(JUDGE_FALLBACK_SCORE, ge=1, le=5)  # score of an unparsable verdict (the paper: 4)
    judge_local_model: str | None = None  # without an endpoint: judge with this local model

    # Evaluation and gate.
    eval_max_new_tokens: int = EVAL_MAX_NEW_TOKENS
    eval_max_prompts: int = 66
    eval_max_benign_prompts: int = 30
    eval_batch_size: int = EVAL_BATCH_SIZE
    eval_prompts_file: Path | None = None  # private harmful eval set; unset: the shipped one
    eval_system_prompts: int = EVAL_SYSTEM_PROMPTS  # attack conditions: the training file's top system prompts
    eval_triggers: int = EVAL_TRIGGERS  # attack conditions: candidate backdoor triggers
    eval_condition_prompts: int = EVAL_CONDITION_PROMPTS  # harmful prompts asked under each attack condition
    trigger_min_share: float = TRIGGER_MIN_SHARE  # a trigger occurs in at least this share of flagged lines
    trigger_min_ratio: float = (
        TRIGGER_MIN_RATIO  # ... and is this many times more frequent there than in unflagged ones
    )
    gate_max_asr_increase: float = GATE_MAX_ASR_INCREASE
    gate_max_asr: float | None = None
    gate_asr_source: AsrSource = DEFAULT_ASR_SOURCE
    gate_max_over_refusal_increase: float = GATE_MAX_OVER_REFUSAL_INCREASE

    # Serving (``/v1/chat/completions``): the API authorizes, then forwards to a backend.
    inference_backend: Literal["embedded", "vllm"] = "embedded"
    inference_url: str = ""  # empty: the embedded ``guardtune infer`` at infer_host:infer_port
    inference_timeout_s: float = 300.0
    inference_api_key: str | None = None  # sent as a bearer token to the inference backend (vLLM's --api-key)
    infer_host: str = "127.0.0.1"
    infer_port: int = 8001
    embedded_infer: bool | None = None  # None: serve starts ``guardtune infer`` when backend=embedded and no URL
    infer_max_adapters: int = INFER_MAX_ADAPTERS  # LRU of loaded adapters per base model
    infer_max_batch: int = INFER_MAX_BATCH
    infer_batch_wait_ms: float = INFER_BATCH_WAIT_MS
    chat_max_tokens: int = 512  # cap on max_tokens (and the default when a request names none)
    chat_requests_per_minute: int = 600  # per organization; 0 = unlimited
    chat_tokens_per_minute: int = Field(200_000, ge=0)  # per organization (prompt estimate + max_tokens); 0 = unlimited
    chat_max_messages: int = Field(256, ge=1)  # messages in one chat request
    chat_max_chars: int = Field(100_000, ge=1)  # characters of all message contents of one chat request
    chat_max_prompt_tokens: int = Field(8192, ge=1)  # estimated prompt tokens of one chat request
    vllm_adapter_dir: Path | None = None  # where released adapters are placed for vLLM to read

    log_level: str = "INFO"
    log_json: bool = True
    # A worker's Prometheus metrics (stage durations, gate decisions, tokens/s, queue waits),
    # served on this port by its main process for all its pool processes; None: not served.
    worker_metrics_port: int | None = Field(None, ge=1, le=65535)

    @model_validator(mode="before")
    @classmethod
    def _refuse_renamed_env(cls, data: Any) -> Any:
        set_names = {name.upper() for name in os.environ}
        renamed = [f"{old} is now {new}" for old, new in RENAMED_ENV.items() if old in set_names]
        if renamed:
            raise ValueError(f"renamed settings: {'; '.join(renamed)} (set the new name instead)")
        return data

    @model_validator(mode="after")
    def _refuse_quantize_off_cuda(self) -> Settings:
        if self.quantize != "none" and self.device_type != "cuda":
            raise ValueError(
                f"GUARDTUNE_QUANTIZE={self.quantize} (bitsandbytes NF4) needs a CUDA device, but GUARDTUNE_DEVICE is "
                f"{self.device!r}: set GUARDTUNE_DEVICE=cuda on a GPU worker, or GUARDTUNE_QUANTIZE=none"
            )
        return self

    @model_validator(mode="after")
    def _refuse_insecure_defaults(self) -> Settings:
        if self.env == "production" and self.secret_key == INSECURE_SECRET:
            raise ValueError("GUARDTUNE_SECRET_KEY must be set to a private value when GUARDTUNE_ENV=production")
        if self.env == "production" and len(self.secret_key) < 32:
            raise ValueError("GUARDTUNE_SECRET_KEY must be at least 32 characters in production")
        if self.env == "production" and len(self.audit_signing_key) < 32:
            raise ValueError("GUARDTUNE_AUDIT_SIGNING_KEY must be set (32+ characters) when GUARDTUNE_ENV=production")
        if self.audit_signing_key and self.audit_signing_key == self.secret_key:
            raise ValueError("GUARDTUNE_AUDIT_SIGNING_KEY must differ from GUARDTUNE_SECRET_KEY")
        return self

    # Derived values: the embedded defaults live under ``home``.
    @property
    def home_dir(self) -> Path:
        return self.home.resolve()

    @property
    def anchor_signing_key(self) -> str:
        """The key that signs audit anchors: ``audit_signing_key``, or outside production
        (where it may be unset) one derived from the secret key."""
        return self.audit_signing_key or f"derived-from-secret-key:{self.secret_key}"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home_dir / 'guardtune.db'}"

    @property
    def broker(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{self.home_dir / 'broker.db'}"

    @property
    def result_backend(self) -> str:
        if self.result_backend_url:
            return self.result_backend_url
        if self.broker.startswith(("redis://", "rediss://")):
            return self.broker
        return f"db+sqlite:///{self.home_dir / 'results.db'}"

    @property
    def storage(self) -> str:
        return self.storage_url or f"file://{self.home_dir / 'objects'}"

    @property
    def device_type(self) -> str:
        """``cuda`` for ``cuda`` or ``cuda:N``, else the device as set (``cpu``, ``mps``)."""
        return self.device.split(":", 1)[0]

    @property
    def checkpointing(self) -> bool:
        """``GUARDTUNE_ACTIVATION_CHECKPOINTING`` resolved: ``auto`` is on for CUDA, where
        memory is short, and off elsewhere, where recomputing only costs time."""
        if self.activation_checkpointing == "auto":
            return self.device_type == "cuda"
        return self.activation_checkpointing

    @property
    def models_dir(self) -> Path:
        return (self.model_cache_dir or self.home_dir / "models").resolve()

    @property
    def broker_is_embedded(self) -> bool:
        return self.broker.startswith(("sqla+", "filesystem://", "memory://"))

    @property
    def broker_is_sqlite(self) -> bool:
        """The embedded default broker: one SQLite file through kombu's SQLAlchemy transport."""
        return self.broker.startswith("sqla+sqlite")

    @property
    def run_embedded_worker(self) -> bool:
        return self.broker_is_embedded if self.embedded_worker is None else self.embedded_worker

    @property
    def inference(self) -> str:
        """Base URL of the inference backend (no trailing slash)."""
        return (self.inference_url or f"http://{self.infer_host}:{self.infer_port}").rstrip("/")

    @property
    def run_embedded_infer(self) -> bool:
        if self.embedded_infer is not None:
            return self.embedded_infer
        return self.inference_backend == "embedded" and not self.inference_url

    @property
    def vllm_adapters(self) -> Path:
        return (self.vllm_adapter_dir or self.home_dir / "vllm-adapters").resolve()

    @property
    def base_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()

"""Settings: the one definition of posefleet's configuration.

Every value can be set by environment (prefix ``POSEFLEET_``, e.g. ``POSEFLEET_TASK_SIZE``);
each entry point builds its settings object once, lets CLI flags override it, and passes plain
values down. AWS endpoints and credentials are not settings: they come from the standard AWS
chain (``AWS_ENDPOINT_URL`` points every client at a local server).
"""

from __future__ import annotations

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from posefleet.metric_names import SERVICE
from posefleet.resources import (
    DEFAULT_EVENTS_QUEUE_NAME,
    DEFAULT_JOBS_TABLE,
    DEFAULT_LIVE_QUEUE_NAME,
    DEFAULT_QUEUE_NAME,
    DEFAULT_RESULTS_BUCKET,
    DISCOVERY_PARAMETER,
)

# What posefleet.preprocess decodes (ALLOWED_FORMATS): phones write .heic (iPhone), .heif and
# .hif (Android, cameras) and .avif besides .jpg.
IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".png",
    ".webp",
    ".gif",
    ".bmp",
    ".tif",
    ".tiff",
    ".heic",
    ".heif",
    ".hif",
    ".avif",
)
MAX_IMAGE_PIXELS = 60_000_000  # the default pixel limit of a decoded image (max_image_pixels)

__all__ = ["CommonSettings", "FleetSettings", "ProducerSettings", "WorkerSettings", "explain"]


class CommonSettings(BaseSettings):
    """What both sides of the queue need to agree on."""

    model_config = SettingsConfigDict(env_prefix="POSEFLEET_", frozen=True, extra="ignore")

    queue_url: str | None = Field(
        default=None, description="Tasks queue URL; looked up from queue_name when unset."
    )
    queue_name: str = Field(
        default=DEFAULT_QUEUE_NAME, description="Tasks queue name (the backfill lane)."
    )
    live_queue_url: str | None = Field(
        default=None,
        description="Live lane queue URL (uploads as they land, urgent jobs); looked up from "
        "live_queue_name when unset.",
    )
    live_queue_name: str = Field(
        default=DEFAULT_LIVE_QUEUE_NAME,
        description="Live lane queue name; empty: no live lane (the worker serves the backfill "
        "queue alone).",
    )
    events_topic: str | None = Field(
        default=None,
        description="ARN of the SNS topic events are published to (posefleet/events.py); "
        "unset: no events.",
    )
    results: str = Field(
        default=f"s3://{DEFAULT_RESULTS_BUCKET}/results",
        description="Where results go: s3://bucket/prefix.",
    )
    model: str = Field(
        default="s3://posefleet-models/pose_classifier/current.json",
        description="Checkpoint the fleet serves: a local path, an s3:// URI of a .pt file, or "
        "of a pointer JSON naming the current checkpoint. S3 files are cached on local disk.",
    )
    log_level: str = Field(default="info", description="debug, info, warning or error.")
    jobs_table: str = Field(
        default=DEFAULT_JOBS_TABLE,
        min_length=3,
        description="DynamoDB table of the job records (posefleet/job_record.py).",
    )

    @field_validator("results")
    @classmethod
    def _results_is_s3(cls, v: str) -> str:
        if not v.startswith("s3://") or len(v) <= 5:
            raise ValueError(f"results must be an s3://bucket/prefix URI, got {v!r}")
        return v.rstrip("/")


class ProducerSettings(CommonSettings):
    events_queue_url: str | None = Field(
        default=None,
        description="Queue subscribed to the events topic that `python -m producer events` "
        "reads; looked up from events_queue_name when unset.",
    )
    events_queue_name: str = Field(default=DEFAULT_EVENTS_QUEUE_NAME)
    discovery_parameter: str = Field(
        default=DISCOVERY_PARAMETER,
        description="SSM parameter a deployed stack publishes its queue and results location in; "
        "read when neither queue_url nor results is set.",
    )
    task_size: int = Field(
        default=20,
        ge=1,
        le=1000,
        description="Keys per task message; with large_task_size, of each partition's first "
        "shard only (producer/job/plan.py).",
    )
    large_task_size: int = Field(
        default=100,
        ge=0,
        le=1000,
        description="Keys per task past each partition's first shard of small tasks, so a "
        "large job sends fewer, larger tasks; 0 keeps every task at task_size. An explicit "
        "--task-size sets both.",
    )
    extensions: tuple[str, ...] = Field(
        default=IMAGE_EXTENSIONS, description="File extensions (case-insensitive) listed as images."
    )
    list_concurrency: int = Field(
        default=16, ge=1, le=256, description="Listings (ListObjectsV2 streams) run at once."
    )
    send_concurrency: int = Field(
        default=8, ge=1, le=64, description="SendMessageBatch calls run at once."
    )
    list_page_size: int = Field(
        default=1000,
        ge=1,
        le=1000,
        description="Keys a ListObjectsV2 page asks for (S3's most is 1,000); a full first "
        "page is what makes a key range split.",
    )
    split_depth: int = Field(
        default=2,
        ge=0,
        le=8,
        description="How many times a listed key range may be cut into smaller ranges "
        "(producer/sources.py); 0 lists the prefix as one stream.",
    )


class WorkerSettings(CommonSettings):
    service: str = Field(default=SERVICE, description="Service dimension of metrics.")
    model_sha256: str | None = Field(
        default=None, description="If set, the model file's SHA-256 must equal this."
    )
    model_cache_dir: str = Field(default="/tmp/posefleet-models")
    device: str = Field(default="auto", description="auto, cpu, cuda or cuda:N.")
    backend: str = Field(
        default="torch",
        pattern="^(torch|openvino|openvino-int8)$",
        description="torch; openvino (CPU only; pip install 'posefleet[openvino]'): the same "
        "model converted at start, faster on CPUs; openvino-int8: the int8 model that "
        "`python -m training quantize` wrote beside the checkpoint, fastest on CPUs "
        "(docs/benchmarks.md).",
    )
    batch_size: int = Field(
        default=0,
        ge=0,
        le=1024,
        description="Images the model takes at once. 0 (the default): by device, 32 on a GPU "
        "and 8 on a CPU, where a batch of 8 runs as fast per image as one of 32 and a live "
        "photo waits for at most the batch the model is on (docs/benchmarks.md).",
    )
    batch_wait_ms: int = Field(
        default=50, ge=0, description="How long a partly filled batch waits for more images."
    )
    fetch_threads: int = Field(default=16, ge=1, le=256)
    decode_threads: int = Field(default=0, ge=0, description="0 means one per available CPU.")
    torch_threads: int = Field(default=0, ge=0, description="0 means one per available CPU.")
    max_images_in_flight: int = Field(
        default=256, ge=1, description="Receiving pauses while this many images are held."
    )
    prefetch_seconds: float = Field(
        default=4.0,
        gt=0,
        description="Work bound on receiving: hold at most this many seconds of the worker's "
        "measured throughput (and never more than max_images_in_flight), so a crash touches "
        "few messages and a small job spreads over the fleet.",
    )
    prefetch_batches: int = Field(
        default=2,
        ge=1,
        description="Floor of that bound, in batches: the batch the model is on and the next "
        "one, so the model never waits (a GPU's larger batch_size raises it with it).",
    )
    crash_attempts: int = Field(
        default=3,
        ge=1,
        description="Crashes of the worker on one image, taken alone after its message came "
        "back, before that image gets a crashed_worker error line instead of another try.",
    )
    wait_time_seconds: int = Field(default=20, ge=0, le=20, description="SQS long poll.")
    visibility_timeout: int = Field(
        default=300, ge=10, description="Seconds a received task stays hidden between heartbeats."
    )
    receive_visibility_seconds: int = Field(
        default=60,
        ge=10,
        description="Visibility a message is received with; the heartbeat then extends it to "
        "visibility_timeout. Short, so that messages whose receive answer was lost on the way "
        "(a dropped connection) come back within a minute, not after the whole timeout.",
    )
    heartbeat_seconds: float = Field(
        default=0.0,
        ge=0,
        description="Heartbeat period; 0 means a third of the shorter of visibility_timeout and "
        "receive_visibility_seconds.",
    )
    drain_seconds: float = Field(
        default=90.0, ge=0, description="Grace after SIGTERM before unfinished tasks are released."
    )
    retry_delay_seconds: int = Field(
        default=30,
        ge=0,
        le=900,
        description="Delay before a message given up on a transient fault comes back (sent "
        "again with this DelaySeconds; SQS's most is 900).",
    )
    fault_budget_seconds: float = Field(
        default=240.0,
        ge=0,
        description="How long a transient AWS fault (throttling, 5xx, dropped connections, an "
        "outage) is retried in place, with jittered back-off, while the heartbeat holds the "
        "message; past it the message is handed back as new.",
    )
    startup_budget_seconds: float = Field(
        default=180.0,
        ge=0,
        description="How long the start-up calls (queue lookups, the model's download) are "
        "retried before the worker gives up with a clear message and exits 1.",
    )
    task_timeout_seconds: float = Field(
        default=900.0,
        gt=0,
        description="A message held longer than this is released (by visibility): nothing "
        "stuck is held forever.",
    )
    stage_max_crashes: int = Field(
        default=5,
        ge=1,
        description="Crashes of one stage (receive, infer, ...) within "
        "stage_crash_window_seconds after which the worker drains and exits 1 for ECS to "
        "replace it; fewer are logged and the stage restarted.",
    )
    stage_crash_window_seconds: float = Field(default=300.0, gt=0)
    job_state_seconds: float = Field(
        default=2.0,
        gt=0,
        description="How long a job's state (cancelled or not) is cached: a cancelled job's "
        "tasks get no more work within about this long (one eventually consistent GetItem a "
        "job, a worker, this often).",
    )
    jpeg_draft: bool = Field(
        default=True,
        description="Decode JPEGs at a reduced DCT scale and HEIFs from their embedded "
        "thumbnail where it is at least the model's input size (off: full decode, slower; "
        "docs/benchmarks.md).",
    )
    max_image_bytes: int = Field(default=40 * 1024 * 1024, ge=1)
    max_image_pixels: int = Field(
        default=MAX_IMAGE_PIXELS,
        ge=1,
        description="Images whose header declares more pixels are refused before decoding "
        "(too_many_pixels); Pillow's own decompression-bomb guard is set to the same limit.",
    )
    aws_max_attempts: int = Field(
        default=3,
        ge=1,
        le=20,
        description="Attempts per AWS call (botocore standard retries, about 3 s in all); "
        "longer faults are retried by the worker itself (fault_budget_seconds).",
    )
    stream_job: str = Field(
        default="stream", description="Job id given to tasks built from S3 event notifications."
    )

    @field_validator("device")
    @classmethod
    def _device_known(cls, v: str) -> str:
        if v not in ("auto", "cpu", "cuda") and not v.startswith("cuda:"):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {v!r}")
        return v


def explain(error: ValidationError) -> str:
    """One line per bad setting, naming its environment variable: ``POSEFLEET_X: why``."""
    parts = []
    for e in error.errors():
        name = ".".join(str(p) for p in e["loc"]) or "settings"
        parts.append(f"POSEFLEET_{name.upper()} ({name}): {e['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


class TrainingSettings(BaseSettings):
    """Training defaults (the seed's): Adam, lr 1e-4, batch 32, up to 50 epochs, patience 10.
    Environment prefix ``POSEFLEET_TRAIN_`` (e.g. ``POSEFLEET_TRAIN_EPOCHS``)."""

    model_config = SettingsConfigDict(env_prefix="POSEFLEET_TRAIN_", frozen=True, extra="ignore")

    arch: str = Field(default="resnet50", description="resnet18, resnet34, resnet50 or resnet101.")
    pretrained: str | None = Field(
        default=None,
        description="Local file of ImageNet weights for the arch; none are downloaded.",
    )
    input_size: int = Field(default=224, ge=32)
    batch_size: int = Field(default=32, ge=1)
    lr: float = Field(default=1e-4, gt=0)
    precision: str = Field(
        default="fp32",
        pattern="^(fp32|bf16)$",
        description="fp32, or bf16: forward and loss under CPU bfloat16 autocast, about twice "
        "as fast on CPUs with AVX512-BF16 or AMX (weights stay fp32; evaluation is fp32).",
    )
    lr_schedule: str = Field(
        default="constant",
        pattern="^(constant|cosine|onecycle)$",
        description="constant; cosine: decay to 0 over the epochs; onecycle: per step, warm up to "
        "lr over the first quarter, then anneal (learns in fewer epochs from scratch).",
    )
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    epochs: int = Field(default=50, ge=1)
    patience: int = Field(default=10, ge=1)
    val_fraction: float = Field(default=0.2, gt=0, lt=1)
    seed: int = 0
    flip: bool = Field(default=True, description="Horizontal flips, with the pose's mirror label.")
    workers: int = Field(default=0, ge=0, description="DataLoader worker processes.")
    threads: int = Field(default=0, ge=0, description="torch threads; 0 means one per CPU.")
    min_accuracy: float = Field(
        default=0.8,
        ge=0,
        le=1,
        description="Publish refuses a model below this validation accuracy.",
    )


class FleetSettings(BaseSettings):
    """The local fleet (``python -m localfleet``): moto's server and N workers on this machine.
    Environment prefix ``POSEFLEET_FLEET_`` (e.g. ``POSEFLEET_FLEET_WORKERS``); flags override."""

    model_config = SettingsConfigDict(env_prefix="POSEFLEET_FLEET_", frozen=True, extra="ignore")

    workers: int = Field(default=2, ge=0, le=64, description="Worker processes to start.")
    state_dir: str = Field(
        default=".posefleet/fleet",
        description="Where the fleet keeps its buckets between runs, its logs and dashboard.",
    )
    port: int = Field(
        default=0,
        ge=0,
        lt=65536,
        description="Loopback port of moto's server; 0: the previous run's, else a free one.",
    )
    sample_seconds: float = Field(
        default=5.0, gt=0, description="How often the queues' depth is sampled."
    )
    sync_seconds: float = Field(
        default=10.0, gt=0, description="How often the buckets are copied into the state folder."
    )
    drain_seconds: float = Field(
        default=30.0, ge=0, description="Grace the workers get to drain when the fleet stops."
    )

"""The service's Prometheus metrics (docs/metrics.md lists each with its PromQL).

prometheus_client's multiprocess mode: every worker of every service writes to the directory
BentoML sets before it imports the service, so these are module-level objects and gauges say how
to combine processes. The entry service serves them all at /metrics (``exposition``).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from .levels import Level

STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
STAGES = (
    "decode",
    "orient",
    "detect",
    "align",
    "generator_queue",
    "generate",
    "paste_back",
    "encode",
)

stage_seconds = Histogram(
    "toonify_stage_seconds",
    "Time per image in each pipeline stage (generate: the image's share of its batch).",
    ["stage"],
    buckets=STAGE_BUCKETS,
)
generator_batch_seconds = Histogram(
    "toonify_generator_batch_seconds", "Time to run one generator batch.", buckets=STAGE_BUCKETS
)
generator_batch_size = Histogram(
    "toonify_generator_batch_size",
    "Crops per generator batch.",
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64),
)
images = Counter("toonify_images", "Uploaded photos by outcome.", ["outcome"])
answered_images = Counter(
    "toonify_answered_images",
    "Photos answered with an image, by the degrade ladder's level that served them.",
    ["level"],
)
http_requests = Counter(
    "toonify_http_requests",
    "HTTP requests to the entry service by route template (unknown paths: unmatched) and status.",
    ["route", "status"],
)
http_request_seconds = Histogram(
    "toonify_http_request_seconds",
    "Time from a request's arrival to the end of its answer, by route template.",
    ["route"],
    buckets=STAGE_BUCKETS,
)
faces = Counter("toonify_faces", "Faces toonified (the faces in answers).")
requests_in_flight = Gauge(
    "toonify_requests_in_flight", "Toonify requests being handled.", multiprocess_mode="livesum"
)
uploads_receiving = Gauge(
    "toonify_uploads_receiving",
    "Uploads whose body is still arriving (they hold no processing slot).",
    multiprocess_mode="livesum",
)
jobs = Counter(
    "toonify_jobs",
    "Jobs by what happened: submitted, done, failed, retried (a run that failed for a passing "
    "reason, back in line), discarded (an answer not kept: the job was deleted, or run again "
    "after its claim lapsed).",
    ["outcome"],
)
webhooks = Counter(
    "toonify_webhooks", "Webhooks by outcome: delivered, or given up after retries.", ["outcome"]
)
queue_depth = Gauge(
    "toonify_queue_depth", "Jobs waiting in the queue.", multiprocess_mode="livemax"
)
queue_oldest_seconds = Gauge(
    "toonify_queue_oldest_seconds",
    "Age of the oldest job waiting in the queue.",
    multiprocess_mode="livemax",
)
job_wait_seconds = Histogram(
    "toonify_job_wait_seconds",
    "From a job's submission to its start.",
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600),
)
model_load_seconds = Gauge(
    "toonify_model_load_seconds",
    "Seconds to load a model and warm it up, per model.",
    ["model"],
    multiprocess_mode="livemax",
)
ready = Gauge(
    "toonify_ready",
    "1 when a service's models are loaded and warm.",
    ["service"],
    multiprocess_mode="livemax",
)
billed_seconds = Counter(
    "toonify_billed_seconds", "Instance time billed under the price profile.", ["profile"]
)
billed_usd = Counter("toonify_billed_usd", "Dollars billed under the price profile.", ["profile"])
cost_per_1000_images_usd = Gauge(
    "toonify_cost_per_1000_images_usd",
    "Billed dollars per 1000 successful images over the rolling window.",
    ["profile"],
    multiprocess_mode="livemostrecent",
)

OUTCOMES = ("ok", "no_face", "bad_input", "too_large", "rejected", "error")
for outcome in OUTCOMES:  # export zeros so rates exist before the first failure
    images.labels(outcome)
for stage in STAGES:
    stage_seconds.labels(stage)
for level in Level:
    answered_images.labels(level)
for outcome in ("submitted", "done", "failed", "retried", "discarded"):
    jobs.labels(outcome)
for outcome in ("delivered", "given_up"):
    webhooks.labels(outcome)


def observe_photo(timings: dict[str, float], faces_answered: int) -> None:
    """One photo through the pipeline: each stage it went through, once."""
    for stage, seconds in timings.items():
        stage_seconds.labels(stage).observe(seconds)
    faces.inc(faces_answered)


def observe_batch(size: int, seconds: float) -> None:
    generator_batch_seconds.observe(seconds)
    generator_batch_size.observe(size)


def exposition() -> bytes:
    """Every process's metrics, in Prometheus' text format."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return generate_latest(registry)

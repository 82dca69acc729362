"""Service settings, from TOONIFY_* environment variables (read once, at import).

Every field's default is what `bentoml serve` uses on a fresh machine; the README lists them.
Worker counts and batching are read when the service classes are defined, so they must be set
before `bentoml serve` starts. pydantic types and checks them; a TOONIFY_* name that nothing
reads stops the start.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Literal

from pydantic import Field, RedisDsn, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# TOONIFY_* names read by tools rather than the service: the spend cap CLI and the tests.
READ_ELSEWHERE = ("TOONIFY_BUDGET_USD_PER_HOUR", "TOONIFY_TEST_ASSETS")


class CostSettings(BaseSettings):
    """The price profile for cost accounting (toonify/cost.py, cost_profiles.json): a named
    profile, any of whose prices a TOONIFY_COST_* variable overrides; ``custom`` is made of
    those variables alone."""

    model_config = SettingsConfigDict(env_prefix="TOONIFY_COST_", frozen=True, extra="forbid")

    profile: str = "cloudrun-2020"
    billing: Literal["request", "instance"] | None = None  # for ``custom``: request by default
    vcpu_second_usd: float | None = Field(None, ge=0)
    gib_second_usd: float | None = Field(None, ge=0)
    per_million_requests_usd: float | None = Field(None, ge=0)
    hourly_usd: float | None = Field(None, ge=0)
    granularity_s: float | None = Field(None, gt=0)


# Settings whose 0 (or absence) means "follows from others", each with how it follows.
DERIVED = {
    "max_receiving": lambda data: 4 * data["max_in_flight"],
    "degraded_size": lambda data: data["crop_size"] // 2,
    "degraded_max_in_flight": lambda data: 2 * data["max_in_flight"],
}


DEFAULT_DETECTOR_MODEL = "mediapipe-face:latest"
FALLBACK_DETECTOR_MODEL = "mtcnn:latest"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TOONIFY_", frozen=True, extra="forbid")

    generator_model: str = "toon-filter:latest"  # a tag in the BentoML model store
    # MediaPipe's face models where build-defaults could fetch them, else MTCNN
    # (model_store.load.stored_detector).
    detector_model: str = DEFAULT_DETECTOR_MODEL
    crop_size: int = 512  # aligned face side sent to the generator
    supersample: int = 2
    detect_size: int = 640
    min_face_size: int = 32
    max_faces: int = 8  # faces toonified per photo with all_faces or paste_back
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 50_000_000
    # The answer's pixels (face sheet or pasted photo): bounds what one small upload can cost.
    max_output_pixels: int = 4096 * 4096
    draft_long_side: int = 1600
    # One preprocessing worker with two threads does the work of two workers in one process
    # (decode, detection and resampling release the GIL): docs/performance.md.
    preprocess_workers: int = 1
    preprocess_threads: int = 2
    # Memory of the decoded photos a preprocessing worker holds between decoding and answering,
    # known from their headers (toonify/photos/budget.py): one 12 MP paste_back (98 MB) or ten
    # 12 MP photos decoded at the draft size, beside a hundred small photos.
    preprocess_pixel_bytes: int = 128 * 2**20
    generator_workers: int = 1
    generator_threads: int = 0  # 0: the CPUs this process may use
    # Crops run at once, each on its share of the threads; 0: the backend's best (ONNX Runtime
    # on a CPU: one per thread up to four; OpenVINO and GPUs: one; generator.py default_streams).
    generator_streams: int = 0
    providers: str = "auto"  # or a comma list such as CUDAExecutionProvider,CPUExecutionProvider
    # onnxruntime | openvino | auto: OpenVINO for bf16 and int8 on CPU-only machines, else
    # ONNX Runtime
    backend: Literal["auto", "onnxruntime", "openvino"] = "auto"
    # f32 | bf16 | int8 | fp16 | auto: the fastest of int8, bf16 (fp16 on a GPU) whose import
    # measured >= min_psnr_db against fp32 on held-out real faces, else f32
    precision: Literal["auto", "f32", "bf16", "int8", "fp16"] = "auto"
    min_psnr_db: float = 35.0
    cache_dir: Path | None = None  # optimised graphs and compiled blobs; none: <tmp>/toonify-cache
    # Crops per generator batch; 0: the backend's best (generator.py default_max_batch).
    max_batch_size: int = 0
    request_timeout_s: float = 120.0  # from the request's arrival to its answer, across services
    # Overload: past this many requests being processed, new ones are refused at once (503,
    # Retry-After) before their upload is read, instead of queueing until they time out.
    max_in_flight: int = 16
    # The degrade ladder (toonify/levels.py): past max_in_flight, requests are served at the
    # reduced level (faces generated at degraded_size and scaled up) up to degraded_max_in_flight
    # in flight, and refused only beyond that. "off": refuse at max_in_flight.
    degrade: bool = True  # on | off
    degraded_size: int = Field(default_factory=DERIVED["degraded_size"])  # half of crop_size
    degraded_max_in_flight: int = Field(default_factory=DERIVED["degraded_max_in_flight"])
    # Uploads being received hold no processing slot; they have their own bound (0: four times
    # max_in_flight) and deadlines, so slow clients are cut off before they can starve the rest.
    max_receiving: int = Field(default_factory=DERIVED["max_receiving"])
    body_timeout_s: float = 60.0  # the whole upload
    body_idle_timeout_s: float = 10.0  # the longest pause in it
    body_min_rate: float = 8192.0  # bytes/s on average, after the first 3 s
    retry_after_s: int = 2
    # Jobs (toonify/jobs/): the embedded store's folder ("" = <tmp>/toonify-queue), or a
    # Redis shared by a fleet (redis://host:port/db); the bounds, how long a result is kept, and
    # how long a job taken by an instance that stops answering waits before another takes it.
    queue_dir: Path | None = None
    queue_url: RedisDsn | None = None
    queue_visibility_timeout_s: float = 30.0
    # Webhooks when a job ends (toonify/jobs/webhooks.py): the Standard Webhooks secret
    # (whsec_..., none: no webhooks), whether private addresses may receive them, and a CA file
    # for receivers with certificates from an internal CA.
    webhook_secret: SecretStr | None = None
    webhook_allow_private: bool = False
    webhook_ca_file: Path | None = None
    queue_max_jobs: int = 10_000
    # Jobs waiting (queued or running) per client network: a visitor has one or two; a school or
    # an office behind one IPv4 address has many visitors; a script has hundreds (docs/jobs.md).
    queue_max_jobs_per_client: int = 50
    # Jobs running at once per instance: each takes CPU from the next /toonify (docs/jobs.md);
    # 0: this instance takes submissions but runs none.
    queue_max_running: int = 2
    queue_max_bytes: int = 2 * 2**30
    result_ttl_s: float = 3600.0
    # Fairness per client address (toonify/edge/fairness.py): against other clients, one address
    # counts for at most this share of each bound (receiving, processing, unsent answers).
    client_share: float = 0.25
    trusted_proxies: str = ""  # comma list of proxies whose X-Forwarded-For names the client
    # A client is the network of this prefix: one IPv6 /64 is one subscriber's, usually.
    client_ipv4_prefix: int = 32
    client_ipv6_prefix: int = 64
    max_query_bytes: int = 2048  # checked before the query is parsed
    max_query_params: int = 16
    # Upload bytes of the requests being worked on, per instance (a client alone meets all of
    # it, others within client_share; a client with nothing in flight may always send one): a
    # waiting photo costs a few copies of its bytes across the workers, so this bounds what a
    # burst of large uploads holds while the preprocessing worker's pixel budget runs them.
    max_in_flight_bytes: int = 8 * 2**20
    # Answer bytes handed to the server but not yet taken by their clients, per instance; each
    # 64 KB of an answer must be taken within answer_idle_timeout_s or the connection is closed.
    max_unsent_answer_bytes: int = 64 * 2**20
    answer_idle_timeout_s: float = 10.0
    # What the platform bills for one instance (cost accounting; the profile is
    # TOONIFY_COST_PROFILE, see cost.py).
    billed_vcpu: float = 2.0
    billed_memory_gib: float = 4.0
    cost_window_s: float = 300.0

    cost: CostSettings = Field(default_factory=CostSettings)

    @classmethod
    def from_env(cls) -> Settings:
        """The settings from the TOONIFY_* environment variables; a TOONIFY_* name that nothing
        reads (a typo) stops the start with the closest known name, so a misspelt setting
        cannot silently leave its default in place. A bad value names its variable."""
        check_names(os.environ)
        try:
            return cls()
        except ValidationError as exc:
            raise ValueError(describe(exc)) from None

    @model_validator(mode="before")
    @classmethod
    def _zero_or_empty_is_unset(cls, data: object) -> object:
        """0 for a derived setting, and an empty path, URL or secret, mean "not set" (the
        README's "0: ..." and ``TOONIFY_QUEUE_URL=`` keep working)."""
        if isinstance(data, dict):
            optional = ("cache_dir", "queue_dir", "queue_url", "webhook_secret", "webhook_ca_file")
            return {
                name: value
                for name, value in data.items()
                if not (name in DERIVED and str(value) == "0")
                and not (name in optional and value in ("", None))
            }
        return data

    @field_validator(
        "generator_threads", "generator_streams", "max_batch_size", "queue_max_running"
    )
    @classmethod
    def _not_negative(cls, value: int) -> int:
        if value < 0:
            raise ValueError("must be 0 or more")
        return value

    @model_validator(mode="after")
    def _checked(self) -> Settings:
        if not 16 <= self.degraded_size < self.crop_size:
            raise ValueError("TOONIFY_DEGRADED_SIZE must lie between 16 and TOONIFY_CROP_SIZE")
        if not 0 < self.client_share <= 1:
            raise ValueError("TOONIFY_CLIENT_SHARE must lie in (0, 1]")
        if not (8 <= self.client_ipv4_prefix <= 32 and 16 <= self.client_ipv6_prefix <= 128):
            raise ValueError(
                "TOONIFY_CLIENT_IPV4_PREFIX must lie in 8-32, TOONIFY_CLIENT_IPV6_PREFIX in 16-128"
            )
        if self.degraded_max_in_flight < self.max_in_flight:
            raise ValueError(
                "TOONIFY_DEGRADED_MAX_IN_FLIGHT must be at least TOONIFY_MAX_IN_FLIGHT"
            )
        return self


def known_names() -> list[str]:
    """Every TOONIFY_* variable the service or its tools read."""
    service = [f"TOONIFY_{name.upper()}" for name in Settings.model_fields if name != "cost"]
    cost = [f"TOONIFY_COST_{name.upper()}" for name in CostSettings.model_fields]
    return [*service, *cost, *READ_ELSEWHERE]


def check_names(environ: dict[str, str] | os._Environ) -> None:
    """ValueError naming each TOONIFY_* variable that nothing reads, with the closest known."""
    known = known_names()
    unknown = sorted(name for name in environ if name.startswith("TOONIFY_") and name not in known)
    if unknown:
        guesses = []
        for name in unknown:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            guesses.append(f"{name} (did you mean {close[0]}?)" if close else name)
        raise ValueError(
            f"unknown setting {', '.join(guesses)}: nothing reads it, so it would change "
            "nothing. The settings are listed in the README."
        )


def describe(error: ValidationError) -> str:
    """A validation error as the variables and values that caused it."""
    problems = []
    prefix = "TOONIFY_COST_" if error.title == CostSettings.__name__ else "TOONIFY_"
    for each in error.errors(include_url=False):
        loc = [str(part) for part in each["loc"]]
        if not loc:
            problems.append(each["msg"])
            continue
        name = prefix + "_".join(loc).upper()
        problems.append(f"{name}={each.get('input')!r}: {each['msg']}")
    return "; ".join(problems)


SETTINGS = Settings.from_env()

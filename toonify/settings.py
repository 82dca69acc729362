"""Service settings, from TOONIFY_* environment variables (read once, at import).

Every field's default is what `bentoml serve` uses on a fresh machine; the README lists them.
Worker counts and batching are read when the service classes are defined, so they must be set
before `bentoml serve` starts. pydantic types and checks them; a TOONIFY_* name that nothing
reads stops the start.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

# TOONIFY_* names read elsewhere: the price profile (cost.py), the spend cap CLI and the tests.
READ_ELSEWHERE = ("TOONIFY_COST_", "TOONIFY_BUDGET_USD_PER_HOUR", "TOONIFY_TEST_ASSETS")


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    generator_model: str = "toon-filter:latest"  # a tag in the BentoML model store
    detector_model: str = "mtcnn:latest"
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
    backend: str = "auto"
    # f32 | bf16 | int8 | fp16 | auto: the fastest of int8, bf16 (fp16 on a GPU) whose import
    # measured >= min_psnr_db against fp32 on held-out real faces, else f32
    precision: str = "auto"
    min_psnr_db: float = 35.0
    cache_dir: str = ""  # optimised graphs and compiled blobs; "" = <tmp>/toonify-cache
    max_batch_size: int = 8
    request_timeout_s: float = 120.0  # from the request's arrival to its answer, across services
    # Overload: past this many requests being processed, new ones are refused at once (503,
    # Retry-After) before their upload is read, instead of queueing until they time out.
    max_in_flight: int = 16
    # The degrade ladder (toonify/levels.py): past max_in_flight, requests are served at the
    # reduced level (faces generated at degraded_size and scaled up) up to degraded_max_in_flight
    # in flight, and refused only beyond that. "off": refuse at max_in_flight.
    degrade: str = "on"
    degraded_size: int = 0  # 0: half of crop_size
    degraded_max_in_flight: int = 0  # 0: twice max_in_flight
    # Uploads being received hold no processing slot; they have their own bound (0: four times
    # max_in_flight) and deadlines, so slow clients are cut off before they can starve the rest.
    max_receiving: int = 0
    body_timeout_s: float = 60.0  # the whole upload
    body_idle_timeout_s: float = 10.0  # the longest pause in it
    body_min_rate: float = 8192.0  # bytes/s on average, after the first 3 s
    retry_after_s: int = 2
    # Jobs (toonify/edge/jobs.py): the embedded store's folder ("" = <tmp>/toonify-queue), or a
    # Redis shared by a fleet (redis://host:port/db); the bounds, how long a result is kept, and
    # how long a job taken by an instance that stops answering waits before another takes it.
    queue_dir: str = ""
    queue_url: str = ""
    queue_visibility_timeout_s: float = 30.0
    # Webhooks when a job ends (toonify/edge/webhooks.py): the Standard Webhooks secret
    # (whsec_..., none: no webhooks), whether private addresses may receive them, and a CA file
    # for receivers with certificates from an internal CA.
    webhook_secret: str = ""
    webhook_allow_private: bool = False
    webhook_ca_file: str = ""
    queue_max_jobs: int = 10_000
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

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings from TOONIFY_* variables; a TOONIFY_* name that nothing reads (a typo)
        is refused, so a misspelt setting cannot silently leave its default in place."""
        environ = os.environ if environ is None else environ
        unknown = sorted(name for name in environ if is_unknown(name))
        if unknown:
            known = ", ".join(f"TOONIFY_{name.upper()}" for name in cls.model_fields)
            raise ValueError(f"unknown setting {', '.join(unknown)} (known: {known})")
        values = {
            name: environ[f"TOONIFY_{name.upper()}"]
            for name in cls.model_fields
            if f"TOONIFY_{name.upper()}" in environ
        }
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = [
                f"TOONIFY_{'.'.join(map(str, e['loc'])).upper()}={e.get('input')!r}: {e['msg']}"
                if e["loc"]
                else e["msg"]
                for e in exc.errors(include_url=False)
            ]
            raise ValueError("; ".join(problems)) from None

    @model_validator(mode="after")
    def _derived_and_checked(self) -> Settings:
        # Settings left at 0 follow from others (set once here, before the model is frozen).
        derived = {
            "max_receiving": self.max_receiving or 4 * self.max_in_flight,
            "degraded_size": self.degraded_size or self.crop_size // 2,
            "degraded_max_in_flight": self.degraded_max_in_flight or 2 * self.max_in_flight,
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)
        if self.generator_threads < 0 or self.generator_streams < 0:
            raise ValueError("TOONIFY_GENERATOR_THREADS and _STREAMS must be 0 (auto) or more")
        if self.max_batch_size < 1:
            raise ValueError("TOONIFY_MAX_BATCH_SIZE must be at least 1")
        if self.degrade not in ("on", "off"):
            raise ValueError(f"TOONIFY_DEGRADE must be on or off, not {self.degrade!r}")
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


def is_unknown(name: str) -> bool:
    if not name.startswith("TOONIFY_") or name.startswith(READ_ELSEWHERE):
        return False
    return name.removeprefix("TOONIFY_").lower() not in Settings.model_fields


SETTINGS = Settings.from_env()

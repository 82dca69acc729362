"""The degrade ladder: a saturated instance serves more people more cheaply before it refuses.

    level    in flight when admitted            what the request gets
    full     under max_in_flight                faces generated at crop_size (512)
    reduced  under degraded_max_in_flight       faces generated at degraded_size (256) and scaled
                                                up; the photo decoded at a matching smaller draft
                                                and aligned without supersampling
    refused  beyond                             503 overloaded with Retry-After

The answer has the same size at both levels: only the detail in the faces differs. The reduced
level exists only for a generator that runs at ``degraded_size`` (measured when it was imported;
fully convolutional models do) and with ``TOONIFY_DEGRADE=on``; without it the instance refuses
at ``max_in_flight``. A reduced request costs a fraction of a full one, so the wider bound keeps
the queue's wait about the same (docs/loadtest.md measures both).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .errors import Overloaded
from .settings import Settings


class Level(StrEnum):
    full = "full"
    reduced = "reduced"


@dataclass(frozen=True)
class LevelSettings:
    """What the preprocessing worker does for a request at one level."""

    crop_size: int  # the aligned crop, and so the size the generator runs at
    supersample: int
    draft_long_side: int  # JPEG draft decoding, when the answer is not the photo itself


def level_settings(settings: Settings, level: Level) -> LevelSettings:
    if level is Level.full:
        return LevelSettings(settings.crop_size, settings.supersample, settings.draft_long_side)
    scale = settings.degraded_size / settings.crop_size
    # The draft shrinks with the crop: a face keeps the same share of crop pixels per photo pixel.
    return LevelSettings(settings.degraded_size, 1, round(settings.draft_long_side * scale))


@dataclass(frozen=True)
class Ladder:
    full_bound: int  # requests in flight served at the full level
    reduced_bound: int  # in flight before refusing; equal to full_bound without a reduced level
    retry_after_s: int

    @classmethod
    def of(cls, settings: Settings, generator_sizes: tuple[int, ...]) -> Ladder:
        """The ladder for a generator that runs at ``generator_sizes`` (its signature's)."""
        reduced = settings.degrade and settings.degraded_size in generator_sizes
        top = settings.degraded_max_in_flight if reduced else settings.max_in_flight
        return cls(settings.max_in_flight, top, settings.retry_after_s)

    @property
    def has_reduced_level(self) -> bool:
        return self.reduced_bound > self.full_bound

    def level_for(self, in_flight: int) -> Level:
        """The level of a request admitted with ``in_flight`` others being processed; raises
        Overloaded past the top of the ladder."""
        if in_flight < self.full_bound:
            return Level.full
        if in_flight < self.reduced_bound:
            return Level.reduced
        raise Overloaded(
            f"The service is at capacity; retry in {self.retry_after_s} s.",
            retry_after=self.retry_after_s,
        )

    def describe(self) -> str:
        if not self.has_reduced_level:
            return f"full level up to {self.full_bound} in flight, then 503 (no reduced level)"
        return (
            f"full level up to {self.full_bound} in flight, reduced up to {self.reduced_bound}, "
            "then 503"
        )

"""The degrade ladder's arithmetic and settings (served behaviour: test_served.py)."""

from __future__ import annotations

import pytest

from toonify.errors import Overloaded
from toonify.levels import Ladder, Level, level_settings
from toonify.settings import Settings

SIZES_WITH_256 = (512, 384, 256, 128)


def levels_up_to(ladder: Ladder, count: int) -> list[Level | None]:
    """The level of a request admitted with 0, 1, ... count - 1 in flight (None: refused)."""
    levels: list[Level | None] = []
    for in_flight in range(count):
        try:
            levels.append(ladder.level_for(in_flight))
        except Overloaded as refused:
            assert refused.retry_after == 3 and "retry in 3 s" in str(refused)
            levels.append(None)
    return levels


def test_full_then_reduced_then_refused():
    ladder = Ladder.of(Settings(max_in_flight=2, retry_after_s=3), SIZES_WITH_256)
    assert ladder.reduced_bound == 4  # twice max_in_flight by default
    full, reduced = Level.full, Level.reduced
    assert levels_up_to(ladder, 6) == [full, full, reduced, reduced, None, None]


def test_no_reduced_level_when_off_or_when_the_generator_cannot_run_smaller():
    off = Ladder.of(Settings(max_in_flight=2, retry_after_s=3, degrade="off"), SIZES_WITH_256)
    fixed = Ladder.of(Settings(max_in_flight=2, retry_after_s=3), (512,))
    for ladder in (off, fixed):
        assert not ladder.has_reduced_level
        assert levels_up_to(ladder, 4) == [Level.full, Level.full, None, None]
    # A degraded size the model was not measured at gives no reduced level either.
    other = Ladder.of(Settings(max_in_flight=2, degraded_size=320), SIZES_WITH_256)
    assert not other.has_reduced_level


def test_the_bounds_are_settings(settings_from):
    settings = settings_from(
        {
            "TOONIFY_MAX_IN_FLIGHT": "3",
            "TOONIFY_DEGRADED_MAX_IN_FLIGHT": "10",
            "TOONIFY_DEGRADED_SIZE": "384",
            "TOONIFY_RETRY_AFTER_S": "3",
        }
    )
    ladder = Ladder.of(settings, SIZES_WITH_256)
    assert (ladder.full_bound, ladder.reduced_bound) == (3, 10)
    assert levels_up_to(ladder, 11).count(Level.reduced) == 7
    assert level_settings(settings, Level.reduced).crop_size == 384


def test_what_each_level_does():
    settings = Settings()
    full, reduced = level_settings(settings, Level.full), level_settings(settings, Level.reduced)
    assert (full.crop_size, full.supersample, full.draft_long_side) == (512, 2, 1600)
    assert (reduced.crop_size, reduced.supersample, reduced.draft_long_side) == (256, 1, 800)


@pytest.mark.parametrize(
    "environ, message",
    [
        ({"TOONIFY_DEGRADE": "maybe"}, "TOONIFY_DEGRADE='maybe'"),
        ({"TOONIFY_DEGRADED_SIZE": "512"}, "between 16 and"),
        ({"TOONIFY_MAX_IN_FLIGHT": "8", "TOONIFY_DEGRADED_MAX_IN_FLIGHT": "4"}, "at least"),
    ],
)
def test_bad_ladder_settings_are_refused_at_start(settings_from, environ, message):
    with pytest.raises(ValueError, match=message):
        settings_from(environ)

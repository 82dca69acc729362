"""The 2020 day as data, and the arithmetic of open-model users (no Locust import here)."""

from __future__ import annotations

import numpy as np

# The day the 2020 site had, in images per hour at each hour since launch (Hacker News in the
# morning, the peak around lunch, the afternoon tail, switched off at hour 22): ~250,000 images.
DAY = (
    (0, 1_000),
    (1, 2_000),
    (2, 5_000),
    (3, 10_000),
    (4, 17_000),
    (5, 23_000),
    (6, 25_000),
    (7, 25_000),
    (8, 22_000),
    (9, 19_000),
    (10, 16_000),
    (11, 14_000),
    (12, 12_000),
    (13, 11_000),
    (14, 10_000),
    (15, 8_000),
    (16, 7_000),
    (17, 6_000),
    (18, 5_000),
    (19, 4_000),
    (20, 3_500),
    (21, 3_000),
    (22, 3_000),
)
DAY_HOURS = 22.0
PEAK_PER_HOUR = 25_000


def images_per_hour(hour: float) -> float:
    """The day's rate at a (fractional) hour, linear between the table's points."""
    if hour < 0 or hour >= DAY_HOURS:
        return 0.0
    hours, rates = zip(*DAY, strict=True)
    return float(np.interp(hour, hours, rates))


def users_for(rate: float, user_rate: float) -> int:
    return max(0, round(rate / user_rate))

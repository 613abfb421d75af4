"""Numeric rules PromQL's functions and aggregations share, written once."""

from __future__ import annotations

import math

import numpy as np


def sort_nan_first(values: np.ndarray) -> np.ndarray:
    """Ascending, NaN before every number: the order Prometheus' quantile sorts in."""
    nan = np.isnan(values)
    return np.concatenate([values[nan], np.sort(values[~nan])])


def quantile_of_sorted(q: float, ordered: np.ndarray) -> float:
    """Prometheus' quantile: linear interpolation between the closest ranks, -Inf below 0, +Inf
    above 1, NaN for NaN or nothing."""
    if not len(ordered) or math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    rank = q * (len(ordered) - 1)
    below = max(0, math.floor(rank))
    above = min(len(ordered) - 1, below + 1)
    weight = rank - math.floor(rank)
    return float(ordered[below] * (1 - weight) + ordered[above] * weight)

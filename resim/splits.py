"""Which hard events are for training, validation and testing: a property of the data.

A fixed hash of the hard-event index into [0, 1) is compared with the cumulative
fractions (train < 0.8 <= val < 0.9 <= test by default), so a group's realizations (and
every object of one event) land in one split, and every reader agrees on it: the trainer
(pre-training, fine-tuning, evaluation), ``resim export`` and the study. The hash depends
on nothing but the event index (no seed), and needs only numpy: exporting imports no torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from .generators.seeds import mix64

SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS: dict[str, float] = {"train": 0.8, "val": 0.1, "test": 0.1}

#: Salt of the split hash: changing it moves events between splits.
_SPLIT_SALT = 0x5EED_5B1175


def _mix64(x: np.ndarray) -> np.ndarray:
    """One SplitMix64 step: add its golden-ratio increment, then scramble."""
    return mix64(x + np.uint64(0x9E3779B97F4A7C15))


def unit_hash(values: np.ndarray, salt: int) -> np.ndarray:
    """A fixed pseudo-random number in [0, 1) for each integer in ``values``."""
    x = np.asarray(values, dtype=np.int64).view(np.uint64)
    x = _mix64(x ^ _mix64(np.full(1, salt, dtype=np.uint64)))
    return (x >> np.uint64(11)).astype(np.float64) * 2.0**-53


def check_fractions(fractions: Mapping[str, float] | None) -> dict[str, float]:
    """``fractions`` of train/val/test (default 0.8/0.1/0.1), checked; they must sum to 1."""
    if fractions is None:
        return dict(DEFAULT_FRACTIONS)
    if not isinstance(fractions, Mapping) or set(fractions) != set(SPLITS):
        raise ValueError(f"fractions must map each of {', '.join(SPLITS)} to a number, "
                         f"got {fractions!r}")
    out = {s: float(fractions[s]) for s in SPLITS}
    if any(not 0 <= f <= 1 for f in out.values()) or not math.isclose(sum(out.values()), 1.0):
        raise ValueError(f"fractions must be in [0, 1] and sum to 1, got {out}")
    return out


def split_of(events: np.ndarray, fractions: Mapping[str, float] | None = None) -> np.ndarray:
    """Index into :data:`SPLITS` of every hard event in ``events`` (a fixed hash)."""
    f = check_fractions(fractions)
    edges = np.cumsum([f[s] for s in SPLITS])[:-1]
    return np.searchsorted(edges, unit_hash(events, _SPLIT_SALT), side="right")


__all__ = ["DEFAULT_FRACTIONS", "SPLITS", "check_fractions", "split_of", "unit_hash"]

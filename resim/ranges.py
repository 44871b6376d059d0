"""Index arithmetic for ranges of rows laid end to end (jets of a group, constituents of a
jet, daughters of a record entry), without a Python loop over the ranges."""

from __future__ import annotations

import numpy as np


def ranges(starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``starts[i] .. starts[i] + lengths[i] - 1`` of every range i, concatenated, and
    the range i of each row."""
    lengths = np.asarray(lengths, np.int64)
    owner = np.repeat(np.arange(len(lengths)), lengths)
    first = np.repeat(np.cumsum(lengths) - lengths, lengths)
    rows = np.repeat(np.asarray(starts, np.int64), lengths) + np.arange(lengths.sum()) - first
    return rows, owner

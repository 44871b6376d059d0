"""Padded particle sets: trimming, and moving between padded and flat (real-only) layouts.

A batch holds jets of different multiplicity padded to a common length ``P``, with
``mask`` (N, P) True for real particles. The encoders keep every per-particle layer on
the real particles only ("flat" layout, ``(M, C)`` with M = number of real particles),
so that BatchNorm statistics, edge lists and pair lists never see padding and adding
padding cannot change an output.
"""

from __future__ import annotations

import torch
from torch import Tensor


def extent(mask: Tensor) -> Tensor:
    """Per jet, the position after its last real particle (0 for a jet without any)."""
    positions = torch.arange(1, mask.shape[1] + 1, device=mask.device)
    return (mask * positions).amax(dim=1)


def trim(mask: Tensor, *tensors: Tensor) -> tuple[Tensor, ...]:
    """Cut the particle axis (dim 1) of ``mask`` and ``tensors`` after the last real particle.

    Work then scales with the longest jet of the batch, not with the loader's padding.
    Nothing is reordered, so padding need not be at the end.
    """
    length = max(int(extent(mask).max()), 1)
    return (mask[:, :length], *(t[:, :length] for t in tensors))


def length_buckets(mask: Tensor, n: int) -> list[Tensor]:
    """Row indices of the jets in up to ``n`` equal-sized groups of similar length.

    Attention costs P² per jet at the padded length P: running short jets apart from long
    ones, each group trimmed to its own longest jet, skips most of the padding.
    """
    order = extent(mask).argsort(stable=True)
    return [rows for rows in order.tensor_split(min(n, len(order))) if len(rows)]


def flat_index(mask: Tensor) -> Tensor:
    """Row indices of the real particles in ``mask.flatten()``: the flat layout's order."""
    return mask.flatten().nonzero().squeeze(1)


def to_padded(flat: Tensor, index: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Scatter flat rows (M, C) back to a zero-padded (N, P, C) tensor."""
    n, p = shape
    out = flat.new_zeros(n * p, flat.shape[1])
    return out.index_copy(0, index, flat).view(n, p, flat.shape[1])


def to_flat(padded: Tensor, index: Tensor) -> Tensor:
    """Gather the real rows (M, C) of a padded (N, P, C) tensor."""
    return padded.reshape(-1, padded.shape[-1]).index_select(0, index)


def pad_to(tensor: Tensor, length: int) -> Tensor:
    """Zero-pad the particle axis (dim 1) of ``tensor`` back to ``length``."""
    missing = length - tensor.shape[1]
    if missing == 0:
        return tensor
    pad = tensor.new_zeros(tensor.shape[0], missing, *tensor.shape[2:])
    return torch.cat([tensor, pad], dim=1)

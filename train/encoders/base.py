"""What every jet encoder is, and the small helpers the registries share.

An encoder maps a padded batch of jets to one vector per jet::

    x     float32 (N, P, F)  per-particle features, x[..., 0] = Δη, x[..., 1] = Δφ to the jet axis
    v     float32 (N, P, 4)  (px, py, pz, E) in GeV
    mask  bool    (N, P)     True for real particles

    encoder(x, v, mask) -> (N, encoder.embed_dim)

Outputs are invariant under permutations of the particles and blind to padding: rows with
mask False never influence a result, wherever they sit.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, cast

from torch import Tensor, nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}


def make_activation(name: str) -> nn.Module:
    """A fresh activation module by name (``relu``, ``elu``, ``gelu``, ``silu``)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}") from None


class SettingError(ValueError):
    """A setting an encoder or method cannot be built with; ``key`` names it (a config
    reports it as ``encoder.<key>`` or ``method.<key>``)."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


def require_count(key: str, value: int, minimum: int = 1) -> None:
    """A number of layers, heads, neighbours, ...: an integer >= ``minimum``. (Zero heads
    divides by zero; zero class-attention blocks or neighbours build a network whose
    output does not depend on its input.)"""
    if value < minimum:
        raise SettingError(key, f"must be an integer >= {minimum}, got {value}")


def require_widths(key: str, widths: Sequence[int]) -> None:
    """Layer widths: at least one, each >= 1 (a zero-wide layer passes nothing on)."""
    if not widths or any(w < 1 for w in widths):
        raise SettingError(key, f"must be a list of one or more layer widths >= 1, got "
                                f"{list(widths)}")


def require_weight(key: str, value: float) -> None:
    """A loss term's weight: a finite number >= 0 (an infinite one makes the loss NaN)."""
    if not (value >= 0 and math.isfinite(value)):
        raise SettingError(key, f"must be a finite number >= 0, got {value}")


def require_positive(key: str, value: float) -> None:
    """A finite number > 0 (a temperature, an epsilon)."""
    if not (value > 0 and math.isfinite(value)):
        raise SettingError(key, f"must be a finite number > 0, got {value}")


class Encoder(nn.Module):
    """Base class of the jet encoders: ``forward(x, v, mask) -> (N, embed_dim)``."""

    n_features: int
    embed_dim: int
    #: Names of the submodules / parameters that turn per-particle outputs into the jet
    #: vector (ParT's class attention and final LayerNorm). Pre-training methods that
    #: work on particles never train them; fine-tuning then does (see finetune.py).
    pooling_modules: tuple[str, ...] = ()

    def forward(self, x: Tensor, v: Tensor, mask: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError


def lookup(registry: Mapping[str, Callable[..., Any]], name: str, kind: str) -> Callable[..., Any]:
    """``registry[name]``, or an error listing the known names of this ``kind``."""
    try:
        return registry[name]
    except KeyError:
        raise ValueError(f"unknown {kind} {name!r}; known: {', '.join(sorted(registry))}") from None


def check_settings(factory: Callable[..., Any], cfg: Mapping[str, Any], what: str,
                   positional: int = 1) -> None:
    """Reject settings ``factory`` does not take, naming the bad key and the valid ones.

    The first ``positional`` parameters are supplied by the builder, not by configs;
    keywords a registry entry fixes with ``functools.partial`` cannot be overridden.
    """
    fixed = set(factory.keywords) if isinstance(factory, partial) else set()
    params = list(inspect.signature(factory).parameters)[positional:]
    valid = [p for p in params if p not in fixed]
    for key in cfg:
        if key in fixed:
            raise ValueError(f"{what}: setting {key!r} is fixed to "
                             f"{cast(partial, factory).keywords[key]!r}")
        if key not in valid:
            raise ValueError(f"{what}: unknown setting {key!r}; valid: {', '.join(valid)}")

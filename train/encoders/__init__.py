"""Jet encoders: ``build_encoder(name, n_features, **settings)``.

=============  ==============================================================  ===========
name           architecture                                                    paper
=============  ==============================================================  ===========
``part``       Particle Transformer: attention with pair-interaction bias      2202.03772
``transformer`` the same blocks without pair features                          2202.03772
``particlenet`` ParticleNet-style dynamic EdgeConv, sum pooling (RS3L)         1902.08570,
                                                                               2403.07066
=============  ==============================================================  ===========

Defaults are the published settings; every size is a keyword, so configs can build small
versions (e.g. ``build_encoder("part", 17, embed_dims=(32, 32), num_layers=2)``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from .base import Encoder, check_settings, lookup
from .particlenet import ParticleNet
from .transformer import ParticleTransformer

ENCODERS: dict[str, Callable[..., Encoder]] = {
    "part": ParticleTransformer,
    "transformer": partial(ParticleTransformer, pair_embed_dims=()),
    "particlenet": ParticleNet,
}


def build_encoder(name: str, n_features: int, **cfg: Any) -> Encoder:
    """The encoder registered as ``name`` for ``n_features`` inputs per particle."""
    factory = lookup(ENCODERS, name, "encoder")
    check_settings(factory, cfg, f"encoder {name!r}")
    return factory(n_features, **cfg)


__all__ = ["ENCODERS", "Encoder", "ParticleNet", "ParticleTransformer", "build_encoder"]

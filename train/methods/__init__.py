"""Self-supervised pre-training methods: ``build_method(name, encoder, **settings)``.

============  ===========================================================================
name          method
============  ===========================================================================
``rs3l``      RS3L / SimCLR: NT-Xent on a projection head (latent 8, temperature 0.1)
``simclr``    alias of ``rs3l``
``vicreg``    VICReg: invariance + variance + covariance on an expander (3 x 8192)
``mpm``       masked particle modelling: regress hidden particles' features (MPMv2)
``jepa``      HEP-JEPA: predict EMA-target embeddings of particle blocks from the context
============  ===========================================================================

Adding a method: a new file with a ``Method`` subclass, and one line in ``METHODS``.
"""

from __future__ import annotations

from typing import Any

from ..encoders.base import Encoder, check_settings, lookup
from .base import Method
from .jepa import JEPA
from .mpm import MPM
from .rs3l import RS3L
from .vicreg import VICReg

METHODS: dict[str, type[Method]] = {
    "rs3l": RS3L,
    "simclr": RS3L,
    "vicreg": VICReg,
    "mpm": MPM,
    "jepa": JEPA,
}


def build_method(name: str, encoder: Encoder, **cfg: Any) -> Method:
    """The method registered as ``name``, training ``encoder``."""
    factory = lookup(METHODS, name, "method")
    check_settings(factory, cfg, f"method {name!r}")
    return factory(encoder, **cfg)


__all__ = ["JEPA", "METHODS", "MPM", "RS3L", "Method", "VICReg", "build_method"]

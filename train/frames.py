"""Views that do not share their hard process trivially: boosts, rescaling, the jet frame.

The realizations of a group share the hard process, hence (almost exactly) the jet's pT
and rapidity. With absolute log pT and log E among the particle features (jet |η| follows
from log E - log pT ≈ log cosh η) and absolute kT and m² among ParT's pair features, a
contrastive objective can match views by those numbers alone: measured on top + QCD, an
RS3L embedding predicted jet |η| with R² 0.98 (random encoder 0.54-0.71). Two remedies,
both acting on :class:`~resim.train.features.Particles` *before* the features are
computed, so the particle features ``x`` and the 4-vectors ``v`` behind the pair features
always agree:

* :class:`ViewKinematics` (``data.views.boost``, ``data.views.pt_scale``): every view,
  re-simulated or augmented alike, is boosted along the beam to a rapidity drawn
  uniformly in ± ``boost`` and its momenta scaled by a factor drawn log-uniformly in
  ``pt_scale``, independently per view. A boost along z shifts every rapidity by the same
  amount and keeps pT, rapidity differences (so ΔR), kT, z and m² exactly; rescaling keeps
  every ratio and angle. Pre-training only: fine-tuning and evaluation see jets as they
  are.
* :func:`jet_frame` (``data.frame = "jet"``): every jet, in pre-training, fine-tuning and
  evaluation, is boosted to rapidity 0 and scaled to pT = :data:`REFERENCE_PT`: only
  jet-relative information remains (log pT becomes log(pT / pT_jet) + const, pair kT and
  m² become kT / pT_jet and m² / pT_jet², up to constants). The frame belongs to the
  encoder's inputs: checkpoints record it and fine-tuning and evaluation apply the
  checkpoint's.

Massive constituents make the boost change pseudorapidities slightly differently from
rapidities (features use η, pair features rapidity); for the GeV-scale hadrons of
500 GeV jets the difference is below 1e-4.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from .augment import _momenta, _with_momenta  # 4-vectors in and out of Particles
from .features import Particles

FRAMES = ("lab", "jet")
#: The jet pT (GeV) of the jet frame: in the range of the shipped cards' jets, so log pT
#: features and the pair features' clamps (1e-8) stay where they are for lab-frame jets.
REFERENCE_PT = 500.0

_TINY = 1e-12


def jet_rapidity_pt(p: Particles) -> tuple[np.ndarray, np.ndarray]:
    """Rapidity and pT of each jet's summed 4-vector (0, 0 for a jet without particles)."""
    px, py, pz, e = np.moveaxis(_momenta(p).sum(axis=1), -1, 0)
    y = 0.5 * np.log(np.maximum(e + pz, _TINY) / np.maximum(e - pz, _TINY))
    return np.where(e > 0, y, 0.0), np.hypot(px, py)


def boost_and_scale(p: Particles, rapidity: np.ndarray, factor: np.ndarray) -> Particles:
    """Boost jet i's particles along the beam by ``rapidity[i]`` and scale their
    4-momenta by ``factor[i]`` (pT order and every other field kept)."""
    v = _momenta(p)
    c, s = np.cosh(rapidity)[:, None], np.sinh(rapidity)[:, None]
    e, pz = v[..., 3], v[..., 2]
    v[..., 2], v[..., 3] = pz * c + e * s, e * c + pz * s
    return _with_momenta(p, v * np.asarray(factor, np.float64)[:, None, None])


#: The jet frame's jet rapidity: 0 up to a margin that keeps the features' hemisphere
#: flip (Δη changes sign for jets at negative η) from being decided by rounding.
FRAME_RAPIDITY = 1e-3


def jet_frame(p: Particles, reference_pt: float = REFERENCE_PT) -> Particles:
    """Every jet boosted to rapidity 0 (:data:`FRAME_RAPIDITY`) and scaled to pT =
    ``reference_pt``; jets at negative rapidity are first mirrored (z -> -z), as the
    features mirror Δη for them."""
    y, pt = jet_rapidity_pt(p)
    mirrored = replace(p, pz=np.where((y < 0)[:, None], -p.pz, p.pz))
    factor = np.where(pt > 0, reference_pt / np.maximum(pt, _TINY), 1.0)
    return boost_and_scale(mirrored, FRAME_RAPIDITY - np.abs(y), factor)


@dataclass(frozen=True)
class ViewKinematics:
    """Per view: a boost to a rapidity uniform in ± ``boost`` (0: none) and a momentum
    scale log-uniform in ``pt_scale`` ((1, 1): none). Call: ``(Particles, rng) -> Particles``."""

    boost: float = 0.0
    pt_scale: tuple[float, float] = (1.0, 1.0)

    def __post_init__(self) -> None:
        if not self.boost >= 0:
            raise ValueError(f"boost must be >= 0, got {self.boost}")
        lo, hi = self.pt_scale
        if not 0 < lo <= hi:
            raise ValueError(f"pt_scale must be [low, high] with 0 < low <= high, got "
                             f"{list(self.pt_scale)}")

    @property
    def active(self) -> bool:
        return self.boost > 0 or tuple(self.pt_scale) != (1.0, 1.0)

    def __call__(self, p: Particles, rng: np.random.Generator) -> Particles:
        n = len(p)
        y, _ = jet_rapidity_pt(p)
        target = rng.uniform(-self.boost, self.boost, n) if self.boost > 0 else y
        lo, hi = np.log(self.pt_scale[0]), np.log(self.pt_scale[1])
        factor = np.exp(rng.uniform(lo, hi, n)) if hi > lo else np.full(n, np.exp(lo))
        return boost_and_scale(p, target - y, factor)


def frame_transform(frame: str) -> Callable[[Particles], Particles] | None:
    """The deterministic input transform of ``data.frame`` (None for the lab frame)."""
    if frame not in FRAMES:
        raise ValueError(f"frame must be one of {', '.join(FRAMES)}, got {frame!r}")
    return jet_frame if frame == "jet" else None


def view_pipeline(steps: Sequence[Callable[[Particles, np.random.Generator], Particles]],
                  frame: str) -> Callable[[Particles, np.random.Generator], Particles] | None:
    """``steps`` (augmentations, view kinematics) in order, then the frame; None if empty."""
    final = frame_transform(frame)
    chain = [s for s in steps if s is not None]
    if not chain and final is None:
        return None

    def run(p: Particles, rng: np.random.Generator) -> Particles:
        for step in chain:
            p = step(p, rng)
        return final(p) if final is not None else p

    return run


__all__ = ["FRAMES", "REFERENCE_PT", "ViewKinematics", "boost_and_scale", "frame_transform",
           "jet_frame", "jet_rapidity_pt", "view_pipeline"]

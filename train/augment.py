"""Hand-made jet augmentations (JetCLR), as positives in place of or on top of re-simulation.

Dillon, Kasieczka, Olischläger, Plehn, Sorrenson, Vogel, "Symmetries, safety, and
self-supervision", arXiv 2108.04253 (JetCLR) build positive pairs from one jet by
symmetry transformations (rotations and translations in the η–φ plane) and by changes
an IR- and collinear-safe observable cannot see (soft, pT-dependent smearing; collinear
splitting). This module adds IR-safe soft additions (extra particles with a negligible
total pT). Every augmentation is a pure function

    augmentation(particles: Particles, rng: np.random.Generator, **settings) -> Particles

acting on the padded arrays of a whole batch at once (vectorised numpy, no loop over jets);
padded slots stay zero and, in the output, real particles come first by decreasing pT, as
:class:`~resim.train.features.Particles` promises. The same ``rng`` state gives the same
output. ``build_augmentation(names, **settings)`` chains them into the
``(Particles, Generator) -> Particles`` callable the data pipeline applies to each view.

==============  ==========================================================================
name            what it does (defaults)
==============  ==========================================================================
``rotate``      rotate every particle's momentum about the jet axis by one angle per jet,
                uniform in [0, 2π) (JetCLR ``rotate_jets``); jet 4-vector kept exactly
``translate``   shift η and φ of all particles of a jet by the same (δη, δφ), uniform in
                ± ``width`` × the jet's η (φ) extent, width 1 (JetCLR ``translate_jets``)
``smear``       move each particle in η and φ by Gaussians of σ = ``strength`` / pT
                (pT floored at ``pt_min``); strength 0.1 GeV, pt_min 0.1 GeV
                (JetCLR ``distort_jets``)
``split``       split particles into two exactly collinear ones with momentum fractions
                z, 1 - z (z uniform), into free padding slots; by default as many as fit,
                each particle at most once (JetCLR ``collinear_fill_jets``)
``soft``        add ``count`` soft photons, uniform in a disc of ``radius`` 0.8 around
                the jet axis, total pT ``pt_fraction`` 1e-6 × the jet pT (IR safety)
==============  ==========================================================================

Physics kept (tested in ``tests/train/test_augment.py``):

* ``rotate``: the jet 3-momentum is the rotation axis and energies are untouched, so jet
  pT and mass are exact (float32 rounding). A 3D rotation about the jet axis is JetCLR's
  rotation of (Δη, Δφ) about the origin to first order in the angular distance (the η–φ
  plane is conformal to the sphere near the axis), and needs no small-angle
  approximation.
* ``translate``: for massless particles a common η shift is a longitudinal boost and a φ
  shift a rotation about the beam: jet pT and mass change only through constituent
  masses (below 1e-3 relative for pions). Note that ``features()`` measures Δη, Δφ from the
  jet axis, which moves with the particles: translations mostly show up in the energy
  features (log E), unlike in JetCLR, whose network saw η, φ in a fixed frame.
* ``smear``: each particle's momentum moves by about ``strength`` GeV (JetCLR's
  Λ_soft = 100 MeV) whatever its pT, so the jet 4-vector moves by about sqrt(n) × strength.
  Stated tolerance, measured on 400–700 GeV jets of 20–90 constituents: jet pT within
  0.5 %, median jet-mass change below 2 % (0.6 % typical). The mass change is
  δm² ~ 2 pT_jet Λ ΔR sqrt(n): light jets (m < 50 GeV) can move by 10 % or more.
* ``split``: the two halves sum to the parent 4-vector: jet 4-vector exact (float32
  rounding). Children copy the parent's charge, kind, d0 and dz (so the summed charge of
  the jet is no longer conserved, as for any collinear splitting of a track).
* ``soft``: massless neutral photons (kind ``photon``, d0 = dz = 0): jet pT changes by
  < ``pt_fraction``, jet mass by < pt_fraction × (pT R / m)² / 2 relative — < 1e-3 for the
  defaults and any jet with m > 0.02 pT.

Augmentations that need free slots (``split``, ``soft``) add only as many particles as a jet
has padding; the data pipeline chooses the padded length.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields, replace
from typing import Any

import numpy as np

from .encoders.base import SettingError
from .features import PHOTON, Particles

Augmentation = Callable[[Particles, np.random.Generator], Particles]

_TINY = 1e-12


# -- kinematics helpers (float64 inside, float32 in Particles) ----------------------------
def _momenta(p: Particles) -> np.ndarray:
    """(N, P, 4) float64 (px, py, pz, E), zero at padding."""
    v = np.stack([p.px, p.py, p.pz, p.energy], axis=-1).astype(np.float64)
    return v * p.mask[..., None]


def _with_momenta(p: Particles, v: np.ndarray) -> Particles:
    """``p`` with new 4-vectors ``v`` (N, P, 4), zero at ``p``'s padding."""
    px, py, pz, e = (c.astype(np.float32) for c in np.moveaxis(v * p.mask[..., None], -1, 0))
    return replace(p, px=px, py=py, pz=pz, energy=e)


def _pt_eta_phi_m(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Transverse momentum, pseudorapidity, azimuth and mass of 4-vectors (..., 4)."""
    px, py, pz, e = np.moveaxis(v, -1, 0)
    pt = np.hypot(px, py)
    eta = np.arcsinh(pz / np.maximum(pt, _TINY))
    m2 = e * e - (px * px + py * py + pz * pz)
    return pt, eta, np.arctan2(py, px), np.sqrt(np.maximum(m2, 0.0))


def _from_pt_eta_phi_m(pt: np.ndarray, eta: np.ndarray, phi: np.ndarray,
                       m: np.ndarray) -> np.ndarray:
    pz = pt * np.sinh(eta)
    e = np.sqrt((pt * np.cosh(eta)) ** 2 + m * m)
    return np.stack([pt * np.cos(phi), pt * np.sin(phi), pz, e], axis=-1)


def _jet_axis(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per jet (pT, η, φ) of the summed 4-vector of ``v`` (N, P, 4)."""
    pt, eta, phi, _ = _pt_eta_phi_m(v.sum(axis=1))
    return pt, eta, phi


def sort_by_pt(p: Particles) -> Particles:
    """Real particles first, by decreasing pT; padding (all zeros) after them."""
    pt = np.where(p.mask, np.hypot(p.px.astype(np.float64), p.py.astype(np.float64)), -1.0)
    order = np.argsort(-pt, axis=1, kind="stable")
    return Particles(**{f.name: np.take_along_axis(getattr(p, f.name), order, axis=1)
                        for f in fields(Particles)})


def _free_slot_fill(free: np.ndarray, chosen: np.ndarray) -> tuple[np.ndarray, ...]:
    """Pair the ``chosen`` particles of each jet with that jet's free slots, in order.

    ``chosen`` must hold at most as many True entries per jet as ``free``. Returns
    (jet, source slot, destination slot) index arrays.
    """
    n_chosen = chosen.sum(axis=1)
    free_rank = np.cumsum(free, axis=1) - 1
    destination = free & (free_rank < n_chosen[:, None])
    jet, source = np.nonzero(chosen)  # row-major: each jet's chosen particles in slot order
    jet_d, dest = np.nonzero(destination)
    assert np.array_equal(jet, jet_d), "more particles chosen than free slots"
    return jet, source, dest


def _limit_to_free_slots(candidates: np.ndarray, free: np.ndarray,
                         rng: np.random.Generator) -> np.ndarray:
    """A random subset of ``candidates`` of at most (free slots) entries per jet."""
    scores = np.where(candidates, rng.random(candidates.shape), np.inf)
    rank = np.argsort(np.argsort(scores, axis=1, kind="stable"), axis=1, kind="stable")
    return candidates & (rank < free.sum(axis=1, keepdims=True))


# -- the augmentations -------------------------------------------------------------------
def rotate(p: Particles, rng: np.random.Generator) -> Particles:
    """Rotate each jet's particles about the jet axis by an angle uniform in [0, 2π).

    Rodrigues' formula on the 3-momenta, axis n = p_jet / |p_jet|:
    p' = p cos θ + (n × p) sin θ + n (n·p)(1 - cos θ); energies unchanged.
    """
    v = _momenta(p)
    axis = v.sum(axis=1)[:, :3]
    norm = np.linalg.norm(axis, axis=1, keepdims=True)
    n = np.where(norm > 0, axis / np.maximum(norm, _TINY), 0.0)[:, None, :]
    theta = rng.uniform(0.0, 2 * np.pi, size=len(p))[:, None, None]
    p3 = v[..., :3]
    rotated = (p3 * np.cos(theta) + np.cross(n, p3) * np.sin(theta)
               + n * (p3 * n).sum(-1, keepdims=True) * (1 - np.cos(theta)))
    # Particles' pT (to the beam) change: restore the pT order.
    return sort_by_pt(_with_momenta(p, np.concatenate([rotated, v[..., 3:]], axis=-1)))


def translate(p: Particles, rng: np.random.Generator, width: float = 1.0) -> Particles:
    """Shift η and φ of all particles of a jet by one (δη, δφ) per jet (pT and masses kept).

    δη is uniform in ± ``width`` × (max η - min η) of the jet's particles, δφ likewise
    (JetCLR's ``translate_jets``, width 1). φ is periodic here, so it needs no bound.
    """
    v = _momenta(p)
    pt, eta, phi, m = _pt_eta_phi_m(v)
    spread = []
    for coordinate in (eta, _unwrapped_phi(phi, v)):
        high = np.where(p.mask, coordinate, -np.inf).max(axis=1)
        low = np.where(p.mask, coordinate, np.inf).min(axis=1)
        spread.append(np.where(p.mask.any(axis=1), high - low, 0.0))
    shift_eta = rng.uniform(-1.0, 1.0, size=len(p)) * width * spread[0]
    shift_phi = rng.uniform(-1.0, 1.0, size=len(p)) * width * spread[1]
    moved = _from_pt_eta_phi_m(pt, eta + shift_eta[:, None], phi + shift_phi[:, None], m)
    return _with_momenta(p, moved)


def _unwrapped_phi(phi: np.ndarray, v: np.ndarray) -> np.ndarray:
    """φ measured from the jet axis in (-π, π], so a jet across φ = ±π has a small spread."""
    _, _, jet_phi = _jet_axis(v)
    return (phi - jet_phi[:, None] + np.pi) % (2 * np.pi) - np.pi


def smear(p: Particles, rng: np.random.Generator, strength: float = 0.1,
          pt_min: float = 0.1) -> Particles:
    """Move each particle in η and φ by independent Gaussians of σ = strength / max(pT, pt_min).

    JetCLR's ``distort_jets`` (strength 0.1, pT floor 0.1; here pT in GeV): soft particles
    move most, but every particle's momentum moves by about ``strength`` GeV, which keeps
    IR-safe observables nearly unchanged. pT and masses of the particles are kept.
    """
    v = _momenta(p)
    pt, eta, phi, m = _pt_eta_phi_m(v)
    sigma = strength / np.maximum(pt, pt_min)
    d_eta = rng.standard_normal(pt.shape) * sigma
    d_phi = rng.standard_normal(pt.shape) * sigma
    return _with_momenta(p, _from_pt_eta_phi_m(pt, eta + d_eta, phi + d_phi, m))


def split(p: Particles, rng: np.random.Generator, probability: float = 1.0) -> Particles:
    """Split particles into two collinear ones sharing the momentum (z, 1 - z), z ~ U(0, 1).

    Each real particle is a candidate with ``probability``; if a jet has fewer free slots
    than candidates, a random subset of the candidates that fits is split (with the
    default 1, JetCLR's ``collinear_fill_jets``: fill the free slots, each particle split
    at most once). The second child goes into a free slot and copies the parent's charge,
    kind, d0 and dz (and their uncertainties); the jet 4-vector is unchanged.
    """
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"split: probability must be in [0, 1], got {probability}")
    candidates = p.mask & (rng.random(p.mask.shape) < probability)
    chosen = _limit_to_free_slots(candidates, ~p.mask, rng)
    z = rng.random(p.mask.shape)
    v = _momenta(p)
    jet, source, dest = _free_slot_fill(~p.mask, chosen)
    out = {f.name: getattr(p, f.name).copy() for f in fields(Particles)}
    parent = v[jet, source]
    keep = z[jet, source, None]
    v[jet, dest] = parent * (1.0 - keep)
    v[jet, source] = parent * keep
    for name in ("charge", "kind", "d0", "dz", "d0_err", "dz_err"):
        out[name][jet, dest] = out[name][jet, source]
    out["mask"][jet, dest] = True
    mask = out.pop("mask")
    return sort_by_pt(_with_momenta(Particles(**out, mask=mask), v))


def soft(p: Particles, rng: np.random.Generator, count: int = 10, pt_fraction: float = 1e-6,
         radius: float = 0.8) -> Particles:
    """Add up to ``count`` soft massless photons per jet, uniform in a disc around the axis.

    Positions uniform in the disc ΔR < ``radius`` (in η–φ) around the jet axis; pT shares
    drawn from a flat Dirichlet and scaled to a total of ``pt_fraction`` × jet pT. Neutral,
    kind ``photon``, d0 = dz = 0. Jets without particles or free slots get none.
    """
    if count < 0 or pt_fraction < 0 or radius < 0:
        raise ValueError(f"soft: count, pt_fraction and radius must be >= 0, got "
                         f"{count}, {pt_fraction}, {radius}")
    n, slots = p.mask.shape
    free = ~p.mask
    wanted = np.where(p.mask.any(axis=1), np.minimum(count, free.sum(axis=1)), 0)
    # The first `wanted` free slots of each jet.
    chosen_slot = free & (np.cumsum(free, axis=1) <= wanted[:, None])
    r = radius * np.sqrt(rng.random((n, slots)))
    angle = rng.uniform(0.0, 2 * np.pi, size=(n, slots))
    share = rng.exponential(size=(n, slots)) * chosen_slot
    share /= np.maximum(share.sum(axis=1, keepdims=True), _TINY)

    v = _momenta(p)
    jet_pt, jet_eta, jet_phi = _jet_axis(v)
    pt = pt_fraction * jet_pt[:, None] * share
    added = _from_pt_eta_phi_m(pt, jet_eta[:, None] + r * np.cos(angle),
                               jet_phi[:, None] + r * np.sin(angle), np.zeros_like(pt))
    v = np.where(chosen_slot[..., None], added, v)
    zero = np.float32(0)
    out = replace(
        p,
        charge=np.where(chosen_slot, zero, p.charge),
        kind=np.where(chosen_slot, np.int8(PHOTON), p.kind).astype(p.kind.dtype),
        d0=np.where(chosen_slot, zero, p.d0),
        dz=np.where(chosen_slot, zero, p.dz),
        mask=p.mask | chosen_slot,
    )
    return sort_by_pt(_with_momenta(out, v))


AUGMENTATIONS: dict[str, Callable[..., Particles]] = {
    "rotate": rotate,
    "translate": translate,
    "smear": smear,
    "split": split,
    "soft": soft,
}


def compose(*steps: Augmentation) -> Augmentation:
    """Apply ``steps`` in order, each drawing from the same generator."""

    def augmentation(particles: Particles, rng: np.random.Generator) -> Particles:
        for step in steps:
            particles = step(particles, rng)
        return particles

    return augmentation


def build_augmentation(names: Sequence[str],
                       **settings: Mapping[str, Any]) -> Augmentation:
    """The augmentations ``names`` applied in that order, with per-name keyword settings.

    ``build_augmentation(["rotate", "smear"], smear={"strength": 0.05})``; in TOML::

        names = ["rotate", "split", "smear"]
        [smear]
        strength = 0.05
    """
    if isinstance(names, str):
        raise ValueError(f"augmentation names must be a list, got the string {names!r}")
    steps = []
    for name in names:
        if name not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {name!r}; known: "
                             f"{', '.join(AUGMENTATIONS)}")
    for name in settings:
        if name not in names:
            raise ValueError(f"settings given for augmentation {name!r}, which is not in "
                             f"the list {list(names)}")
    for name in names:
        function = AUGMENTATIONS[name]
        cfg = dict(settings.get(name, {}))
        params = dict(list(inspect.signature(function).parameters.items())[2:])
        for key in cfg:
            if key not in params:
                raise ValueError(f"augmentation {name!r}: unknown setting {key!r}; valid: "
                                 f"{', '.join(params)}")
            _check_setting(name, key, cfg[key], params[key].default)
        steps.append(_bind(function, cfg))
    return compose(*steps)


#: Settings with an upper bound (every setting is a number >= 0).
_AT_MOST = {("split", "probability"): 1.0}


def _check_setting(name: str, key: str, value: Any, default: Any) -> None:
    """Every augmentation setting is a finite number >= 0 (an integer where its default
    is), checked when the chain is built: applied to the first batch, a negative count
    raised mid-training, an infinite smearing made NaN inputs."""
    integer = isinstance(default, int)
    if isinstance(value, bool) or not isinstance(value, int if integer else int | float):
        raise SettingError(f"{name}.{key}", f"augmentation {name!r}: must be "
                                            f"{'an integer' if integer else 'a number'}, got "
                                            f"{value!r}")
    high = _AT_MOST.get((name, key), math.inf)
    if not (math.isfinite(value) and 0 <= value <= high):
        bound = f"in [0, {high}]" if math.isfinite(high) else "a finite number >= 0"
        raise SettingError(f"{name}.{key}", f"augmentation {name!r}: must be {bound}, got "
                                            f"{value}")


def _bind(function: Callable[..., Particles], cfg: dict[str, Any]) -> Augmentation:
    def step(particles: Particles, rng: np.random.Generator) -> Particles:
        return function(particles, rng, **cfg)

    step.__name__ = function.__name__
    return step


__all__ = ["AUGMENTATIONS", "Augmentation", "build_augmentation", "compose", "rotate",
           "smear", "soft", "sort_by_pt", "split", "translate"]

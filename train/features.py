"""Per-particle encoder inputs from jet constituents, as ParT and RS3L use them.

Jets arrive as flat constituent columns plus per-jet counts (the resim file layout) or as
an awkward array, and leave as fixed-size padded arrays: :class:`Particles` (N jets × P
slots, the hardest P constituents, ``mask`` True for real ones). Everything here is
columnar numpy: no loop over jets or particles.

:func:`features` turns :class:`Particles` into the two encoder inputs,

* ``x`` (N, P, F): the features named in :data:`FEATURES`, zero at padding. ``x[..., 0]``
  and ``x[..., 1]`` are Δη and Δφ, the coordinates ParticleNet's first EdgeConv uses;
* ``v`` (N, P, 4): (px, py, pz, E) in GeV, from which ParT computes its pair features.

The jet axis is the four-momentum sum of the kept constituents (for resim jets, the
E-scheme jet itself up to the softest constituents beyond P). Δη is flipped for jets at
negative η, as in ParT's JetClass inputs, so that both hemispheres look alike.

Particle types and impact parameters come from the constituents' ``kind``, ``d0``, ``dz``
columns (and ``d0_err``, ``dz_err``): at detector level what the detector measured, at
particle level the particle's own (its PDG id's type; straight-line impact parameters
from its production vertex, leaving it along its momentum, at the point of closest
approach to the beam line — a few per cent off the helix in a field for tracks above a
few GeV — 0 for neutral particles; uncertainties 0; see
:func:`resim.layout.particle_level_columns`, which :func:`resim.layout.with_derived` also
uses for older files and for callers that pass only the basic columns). d0 and dz enter as
``tanh`` of mm (bounded, linear for the sub-mm values of b and c decays).

Two feature sets: :data:`FEATURES`, RS3L's (particle-level jets, and every encoder made
before detector-level jets), and :data:`DETECTOR_FEATURES`, JetClass's full set — the same
plus the impact-parameter uncertainties ``d0_err``, ``dz_err`` (mm, clipped to [0, 1] as
ParT's JetClass inputs) — for encoders trained on detector-level jets
(:func:`feature_names`). An encoder keeps the set it was trained with, whatever level it
is fine-tuned or evaluated on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import awkward as ak
import numpy as np
from numpy.typing import DTypeLike

from resim.layout import (
    CHARGED_HADRON,
    DETECTOR,
    ELECTRON,
    IMPACT_COLUMNS,
    KINDS,
    LEVELS,
    MUON,
    NEUTRAL_HADRON,
    PHOTON,
    with_derived,
)
from resim.layout import kind_of as particle_kind

#: Per-particle features, in the order of ``x[..., i]`` (RS3L's eleven, with the particle
#: type one-hot spelled out: 15 numbers).
FEATURES = (
    "deta", "dphi", "log_pt", "log_e", "log_pt_rel", "log_e_rel", "delta_r", "charge",
    *(f"is_{k}" for k in KINDS),
    "tanh_d0", "tanh_dz",
)
N_FEATURES = len(FEATURES)
#: JetClass's full per-particle set: :data:`FEATURES` and the impact-parameter
#: uncertainties (mm, clipped to [0, 1]).
DETECTOR_FEATURES = (*FEATURES, "d0_err", "dz_err")
FEATURE_SETS = (FEATURES, DETECTOR_FEATURES)

_TINY = 1e-8


def feature_names(level: str) -> tuple[str, ...]:
    """The feature set of an encoder trained on jets of ``level`` (``LEVELS``)."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
    return DETECTOR_FEATURES if LEVELS.index(level) == DETECTOR else FEATURES


def known_features(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` (as a checkpoint stores them) if they are one of :data:`FEATURE_SETS`."""
    names = tuple(names)
    if names not in FEATURE_SETS:
        raise ValueError(f"unknown input features {list(names)}; this resim computes "
                         f"{list(FEATURES)} or {list(DETECTOR_FEATURES)}")
    return names


@dataclass
class Particles:
    """The hardest ``P`` constituents of ``N`` jets, padded: every array is (N, P).

    Momenta in GeV, impact parameters and their uncertainties in mm; ``kind`` indexes
    :data:`KINDS`. Padded slots hold zeros (``mask`` False). Real particles come first, by
    decreasing pT.
    """

    px: np.ndarray
    py: np.ndarray
    pz: np.ndarray
    energy: np.ndarray
    charge: np.ndarray
    kind: np.ndarray
    d0: np.ndarray
    dz: np.ndarray
    mask: np.ndarray
    #: Always arrays once made: left out (particle level), __post_init__ makes zeros.
    d0_err: np.ndarray = None  # type: ignore[assignment]
    dz_err: np.ndarray = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        for name in ("d0_err", "dz_err"):  # particle level: exact
            if getattr(self, name) is None:
                setattr(self, name, np.zeros(self.mask.shape, np.float32))

    def __len__(self) -> int:
        return self.mask.shape[0]

    @property
    def n_slots(self) -> int:
        return self.mask.shape[1]

    def take(self, rows: np.ndarray | slice) -> Particles:
        """The jets ``rows`` (an index array or slice)."""
        return Particles(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})

    @staticmethod
    def concatenate(parts: list[Particles]) -> Particles:
        return Particles(**{f.name: np.concatenate([getattr(p, f.name) for p in parts])
                            for f in fields(Particles)})

    @classmethod
    def from_flat(cls, columns: dict[str, np.ndarray], counts: np.ndarray,
                  max_particles: int) -> Particles:
        """Pad flat constituent columns (resim's ``px, py, pz, E, pid, charge, vx, vy, vz,
        d0, dz, d0_err, dz_err, kind``; the last five derived as for particle-level jets
        where absent), the jets' lists concatenated with ``counts[i]`` rows for jet i,
        pT-ordered."""
        if max_particles < 1:
            raise ValueError(f"max_particles must be >= 1, got {max_particles}")
        counts = np.asarray(counts, dtype=np.int64)
        kept = np.minimum(counts, max_particles)
        jet = np.repeat(np.arange(len(counts)), kept)
        slot = np.arange(kept.sum()) - np.repeat(np.cumsum(kept) - kept, kept)
        source = np.repeat(np.cumsum(counts) - counts, kept) + slot
        shape = (len(counts), max_particles)

        def pad(values: np.ndarray, dtype: DTypeLike) -> np.ndarray:
            out = np.zeros(shape, dtype)
            out[jet, slot] = values[source]
            return out

        columns = with_derived("constituents", columns, only=IMPACT_COLUMNS)
        mask = np.zeros(shape, bool)
        mask[jet, slot] = True
        f4 = {c: pad(columns[c], np.float32) for c in ("px", "py", "pz", "E", "charge", "d0",
                                                         "dz", "d0_err", "dz_err")}
        return cls(px=f4["px"], py=f4["py"], pz=f4["pz"], energy=f4["E"], charge=f4["charge"],
                   kind=pad(columns["kind"], np.int8), d0=f4["d0"], dz=f4["dz"], mask=mask,
                   d0_err=f4["d0_err"], dz_err=f4["dz_err"])

    @classmethod
    def from_awkward(cls, constituents: ak.Array, max_particles: int) -> Particles:
        """Pad an awkward array of constituent lists (records with resim's fields)."""
        counts = ak.to_numpy(ak.num(constituents))
        flat = ak.flatten(constituents)
        columns = {name: ak.to_numpy(flat[name]) for name in flat.fields}
        return cls.from_flat(columns, counts, max_particles)

    def jet_p4(self) -> np.ndarray:
        """(N, 4) float64: (px, py, pz, E) summed over the real particles."""
        p = np.stack([self.px, self.py, self.pz, self.energy], axis=-1).astype(np.float64)
        return (p * self.mask[..., None]).sum(axis=1)


def _eta_phi_pt(px: np.ndarray, py: np.ndarray, pz: np.ndarray):
    pt = np.hypot(px, py)
    return np.arcsinh(pz / np.maximum(pt, _TINY)), np.arctan2(py, px), pt


def features(p: Particles, names: Sequence[str] = FEATURES) -> tuple[np.ndarray, np.ndarray]:
    """Encoder inputs ``x`` (N, P, len(names)) and ``v`` (N, P, 4), float32, 0 at padding;
    ``names``: :data:`FEATURES` or :data:`DETECTOR_FEATURES`."""
    names = known_features(names)
    jet = p.jet_p4()
    jet_eta, jet_phi, jet_pt = _eta_phi_pt(jet[:, 0], jet[:, 1], jet[:, 2])
    eta, phi, pt = _eta_phi_pt(p.px.astype(np.float64), p.py.astype(np.float64),
                               p.pz.astype(np.float64))
    sign = np.where(jet_eta < 0, -1.0, 1.0)[:, None]
    deta = (eta - jet_eta[:, None]) * sign
    dphi = (phi - jet_phi[:, None] + np.pi) % (2 * np.pi) - np.pi
    energy = np.maximum(p.energy.astype(np.float64), _TINY)
    pt = np.maximum(pt, _TINY)
    one_hot = p.kind[..., None] == np.arange(len(KINDS), dtype=np.int8)
    x = np.concatenate([
        np.stack([
            deta, dphi, np.log(pt), np.log(energy),
            np.log(pt / np.maximum(jet_pt, _TINY)[:, None]),
            np.log(energy / np.maximum(jet[:, 3], _TINY)[:, None]),
            np.hypot(deta, dphi), p.charge,
        ], axis=-1),
        one_hot,
        np.stack([np.tanh(p.d0), np.tanh(p.dz)], axis=-1),
        *([np.stack([np.clip(p.d0_err, 0, 1), np.clip(p.dz_err, 0, 1)], axis=-1)]
          if names == DETECTOR_FEATURES else []),
    ], axis=-1).astype(np.float32)
    x *= p.mask[..., None]
    v = np.stack([p.px, p.py, p.pz, p.energy], axis=-1) * p.mask[..., None]
    return x, v.astype(np.float32)


# Particle kinds are defined with the data format (resim.layout); they stay importable from
# here, where the trainer's code and tests look for them.
__all__ = [
    "CHARGED_HADRON", "DETECTOR_FEATURES", "ELECTRON", "FEATURES", "FEATURE_SETS", "KINDS",
    "MUON", "NEUTRAL_HADRON", "N_FEATURES", "PHOTON", "Particles", "feature_names",
    "features", "known_features", "particle_kind",
]

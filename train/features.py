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

Impact parameters are straight-line: the charged particle leaves its production vertex
along its momentum, and d0 (transverse, signed) and dz (longitudinal) are taken at its
point of closest approach to the beam line, in mm, as ``tanh`` (bounded, linear for the
sub-mm values of b and c decays). Neutral particles get 0, as in CMS's and JetClass's
inputs. (Straight lines ignore the curvature in a magnetic field: a few per cent at the
relevant distances for tracks above a few GeV.)
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import awkward as ak
import numpy as np

#: Particle types of the five-way one-hot (charged hadron, neutral hadron, photon, e, μ).
KINDS = ("charged_hadron", "neutral_hadron", "photon", "electron", "muon")
CHARGED_HADRON, NEUTRAL_HADRON, PHOTON, ELECTRON, MUON = range(len(KINDS))

#: Per-particle features, in the order of ``x[..., i]`` (RS3L's eleven, with the particle
#: type one-hot spelled out: 15 numbers).
FEATURES = (
    "deta", "dphi", "log_pt", "log_e", "log_pt_rel", "log_e_rel", "delta_r", "charge",
    *(f"is_{k}" for k in KINDS),
    "tanh_d0", "tanh_dz",
)
N_FEATURES = len(FEATURES)

_TINY = 1e-8


def particle_kind(pid: np.ndarray, charge: np.ndarray) -> np.ndarray:
    """Index into :data:`KINDS` for PDG ids ``pid`` with electric charges ``charge``."""
    apid = np.abs(pid)
    return np.select(
        [apid == 11, apid == 13, apid == 22, charge != 0],
        [ELECTRON, MUON, PHOTON, CHARGED_HADRON],
        NEUTRAL_HADRON,
    ).astype(np.int8)


def impact_parameters(px: np.ndarray, py: np.ndarray, pz: np.ndarray, vx: np.ndarray,
                      vy: np.ndarray, vz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Straight-line (d0, dz) in the vertex units, for momenta p leaving vertices v.

    The track is v + t p; its transverse distance to the beam line is smallest at
    t* = -(vx px + vy py) / pT², where d0 = (vx py - vy px) / pT (the signed distance) and
    dz = vz + t* pz.
    """
    pt2 = np.maximum(px * px + py * py, _TINY)
    d0 = (vx * py - vy * px) / np.sqrt(pt2)
    dz = vz - (vx * px + vy * py) * pz / pt2
    return d0, dz


@dataclass
class Particles:
    """The hardest ``P`` constituents of ``N`` jets, padded: every array is (N, P).

    Momenta in GeV, impact parameters in mm; ``kind`` indexes :data:`KINDS`. Padded slots
    hold zeros (``mask`` False). Real particles come first, by decreasing pT.
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
        """Pad flat constituent columns (resim's ``px, py, pz, E, pid, charge, vx, vy, vz``),
        the jets' lists concatenated with ``counts[i]`` rows for jet i, pT-ordered."""
        if max_particles < 1:
            raise ValueError(f"max_particles must be >= 1, got {max_particles}")
        counts = np.asarray(counts, dtype=np.int64)
        kept = np.minimum(counts, max_particles)
        jet = np.repeat(np.arange(len(counts)), kept)
        slot = np.arange(kept.sum()) - np.repeat(np.cumsum(kept) - kept, kept)
        source = np.repeat(np.cumsum(counts) - counts, kept) + slot
        shape = (len(counts), max_particles)

        def pad(values: np.ndarray, dtype: type) -> np.ndarray:
            out = np.zeros(shape, dtype)
            out[jet, slot] = values[source]
            return out

        px, py, pz = (pad(columns[c], np.float32) for c in ("px", "py", "pz"))
        vx, vy, vz = (pad(columns[c], np.float32) for c in ("vx", "vy", "vz"))
        charge = pad(columns["charge"], np.float32)
        mask = np.zeros(shape, bool)
        mask[jet, slot] = True
        kind = np.where(mask, particle_kind(pad(columns["pid"], np.int32), charge), 0)
        d0, dz = impact_parameters(px, py, pz, vx, vy, vz)
        charged = charge != 0
        return cls(px=px, py=py, pz=pz, energy=pad(columns["E"], np.float32), charge=charge,
                   kind=kind.astype(np.int8), d0=np.where(charged, d0, 0).astype(np.float32),
                   dz=np.where(charged, dz, 0).astype(np.float32), mask=mask)

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


def features(p: Particles) -> tuple[np.ndarray, np.ndarray]:
    """Encoder inputs ``x`` (N, P, len(FEATURES)) and ``v`` (N, P, 4), float32, 0 at padding."""
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
    ], axis=-1).astype(np.float32)
    x *= p.mask[..., None]
    v = np.stack([p.px, p.py, p.pz, p.energy], axis=-1) * p.mask[..., None]
    return x, v.astype(np.float32)

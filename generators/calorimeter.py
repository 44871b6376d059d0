"""Calorimeter cells and the particle-flow step of one calorimeter, columnar.

A calorimeter is a grid of (η, φ) cells in rings of η (:class:`CellGrid`, from the
preset's segments). Each cell sums the energy particles deposit in it; the sum is smeared
log-normally with the resolution σ(E, η of the cell centre) and dropped below the energy
and significance thresholds. Tracks that point at the cell (their own calorimeter share
of energy) are then subtracted, as in Delphes' SimpleCalorimeter: a significant excess
(above the threshold energy and ``significance_min`` times the combined track and cell
resolution) becomes a neutral candidate at a point of the cell; otherwise the cell's
tracks are rescaled to the resolution-weighted mean of the track and cell energies.

All cells of many realizations are handled at once: entries are keyed by (realization,
cell) and summed with ``bincount`` in their given order, so a realization's cells do not
depend on the other realizations in the call.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from resim.detector_spec import CalorimeterSpec

from .seeds import normal, uniform


class CellGrid:
    """Cells of equal η rings, each ring cut into equal φ cells starting at -π."""

    def __init__(self, segments: tuple[tuple[float, float, int, int], ...]):
        edges: list[float] = [segments[0][0]]
        phi_bins: list[int] = []
        for lo, hi, rings, n_phi in segments:
            edges.extend(np.linspace(lo, hi, rings + 1)[1:].tolist())
            phi_bins.extend([n_phi] * rings)
        self.eta_edges = np.asarray(edges)
        self.phi_bins = np.asarray(phi_bins, np.int64)
        self.first = np.concatenate([[0], np.cumsum(self.phi_bins)])  # first cell of a ring
        self.n_cells = int(self.first[-1])

    def cell(self, eta: np.ndarray, phi: np.ndarray) -> np.ndarray:
        """Cell index of each (η, φ), -1 outside the grid."""
        ring = np.searchsorted(self.eta_edges, eta, side="right") - 1
        inside = (ring >= 0) & (ring < len(self.phi_bins))
        ring = np.clip(ring, 0, len(self.phi_bins) - 1)
        n_phi = self.phi_bins[ring]
        j = np.minimum(((phi + np.pi) * (n_phi / (2 * np.pi))).astype(np.int64), n_phi - 1)
        return np.where(inside, self.first[ring] + np.maximum(j, 0), -1)

    def bounds(self, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(η low, η high, φ low, φ high) of cells."""
        ring = np.searchsorted(self.first, cells, side="right") - 1
        width = 2 * np.pi / self.phi_bins[ring]
        phi_lo = -np.pi + (cells - self.first[ring]) * width
        return self.eta_edges[ring], self.eta_edges[ring + 1], phi_lo, phi_lo + width


@dataclass
class Deposits:
    """What reaches one calorimeter: particle energies and track energies per cell.

    ``event`` is the realization (index into the keys), ``cell`` the cell index. For
    tracks, ``sigma2`` is the squared energy resolution of the track."""

    event: np.ndarray
    cell: np.ndarray
    energy: np.ndarray
    track_event: np.ndarray
    track_cell: np.ndarray
    track_energy: np.ndarray
    track_sigma2: np.ndarray


@dataclass
class Measured:
    """The outcome: neutral candidates (per cell with a significant excess) and the
    factor each track's momentum is scaled by."""

    event: np.ndarray  # of each neutral candidate
    cell: np.ndarray
    energy: np.ndarray
    eta: np.ndarray
    phi: np.ndarray
    #: Per neutral candidate: the deposit (index into Deposits.energy) that gave the cell
    #: the most energy, for carrying its particle's truth (e.g. its collision) along;
    #: -1 unless asked for.
    leading: np.ndarray
    track_scale: np.ndarray  # one per track of the Deposits


class Calorimeter:
    """One calorimeter of a :class:`~resim.detector_spec.DetectorSpec` and its cells; its
    random numbers use streams ``stream`` ... ``stream + 2``."""

    def __init__(self, spec: CalorimeterSpec, stream: int):
        self.spec = spec
        self.grid = CellGrid(spec.geometry)
        self.stream = stream

    def sigma(self, energy: np.ndarray, abs_eta: np.ndarray) -> np.ndarray:
        return self.spec.resolution(energy, abs_eta) * self.spec.resolution_scale

    def measure(self, d: Deposits, keys: np.ndarray, leading: bool = False) -> Measured:
        """Smear every hit cell, subtract tracks, make neutral candidates (and find each
        one's leading deposit if ``leading``)."""
        spec, n = self.spec, self.grid.n_cells
        n_dep = len(d.event)
        key = np.concatenate([d.event * n + d.cell, d.track_event * n + d.track_cell])
        cells, group = np.unique(key, return_inverse=True)
        m = len(cells)
        true = np.bincount(group[:n_dep], weights=d.energy, minlength=m)
        tracks = np.bincount(group[n_dep:], weights=d.track_energy, minlength=m)
        track_s2 = np.bincount(group[n_dep:], weights=d.track_sigma2, minlength=m)
        event, cell = cells // n, cells % n
        eta_lo, eta_hi, phi_lo, phi_hi = self.grid.bounds(cell)
        abs_eta = np.abs(0.5 * (eta_lo + eta_hi))
        k = keys[event]

        sigma = self.sigma(true, abs_eta)
        energy = lognormal(true, sigma, normal(k, self.stream, cell)) * spec.energy_scale
        sigma = self.sigma(energy, abs_eta)  # Delphes: at the measured energy
        energy[(energy < spec.energy_min) | (energy < spec.significance_min * sigma)] = 0.0

        excess = np.maximum(energy - tracks, 0.0)
        combined = np.sqrt(track_s2 + sigma * sigma)
        significant = (excess > spec.energy_min) & (
            excess > spec.significance_min * combined)
        # No significant excess: the tracks take the best estimate of the charged energy.
        w_track = np.divide(1.0, track_s2, out=np.zeros(m), where=track_s2 > 0)
        w_cell = np.divide(1.0, sigma * sigma, out=np.zeros(m), where=sigma > 0)
        rescale = ~significant & (tracks > 0) & (w_track + w_cell > 0)
        best = np.divide(w_track * tracks + w_cell * energy, w_track + w_cell,
                         out=tracks.copy(), where=rescale)
        scale = np.divide(best, tracks, out=np.ones(m), where=rescale)

        c = np.flatnonzero(significant)
        kc = k[c]
        if spec.smear_cell_center:
            eta = eta_lo[c] + (eta_hi[c] - eta_lo[c]) * uniform(kc, self.stream + 1, cell[c])
            phi = phi_lo[c] + (phi_hi[c] - phi_lo[c]) * uniform(kc, self.stream + 2, cell[c])
        else:
            eta, phi = 0.5 * (eta_lo[c] + eta_hi[c]), 0.5 * (phi_lo[c] + phi_hi[c])
        top = np.full(m, -1, np.int64)
        if leading:  # the most energetic deposit of each cell: first by falling energy
            dep_group = group[:n_dep]
            order = np.lexsort((-d.energy, dep_group))
            first = np.ones(n_dep, bool)
            first[1:] = dep_group[order][1:] != dep_group[order][:-1]
            top[dep_group[order][first]] = order[first]
        return Measured(event=event[c], cell=cell[c], energy=excess[c], eta=eta, phi=phi,
                        leading=top[c], track_scale=scale[group[n_dep:]])


def lognormal(mean: np.ndarray, sigma: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Log-normal numbers with the given mean and standard deviation (Delphes' LogNormal),
    from standard normal ``z``; 0 where the mean is not positive."""
    positive = mean > 0
    safe = np.where(positive, mean, 1.0)
    b2 = np.log1p((sigma / safe) ** 2)
    return np.where(positive, np.exp(np.log(safe) - 0.5 * b2 + np.sqrt(b2) * z), 0.0)


__all__ = ["Calorimeter", "CellGrid", "Deposits", "Measured", "lognormal"]

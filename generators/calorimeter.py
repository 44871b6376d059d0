"""Calorimeter cells and the particle-flow step of one calorimeter, columnar.

A calorimeter is a grid of (η, φ) cells in rings of η (:class:`CellGrid`, from the
preset's segments). Each cell sums the energy particles deposit in it; the sum is smeared
log-normally with the resolution σ(E, η of the cell centre) and dropped below the energy
and significance thresholds. Tracks that point at the cell (their own calorimeter share
of energy) are then subtracted, as in Delphes' SimpleCalorimeter: a significant excess
(above the threshold energy and ``significance_min`` times the combined track and cell
resolution) becomes a neutral candidate at a point of the cell; otherwise the cell's
tracks are rescaled to the resolution-weighted mean of the track and cell energies.

Energies are in single precision, as the output stores them (sums of deposits accumulated
in double precision): resolutions are percents, float32 keeps 7 digits, and numpy's
logarithms and exponentials are several times faster on it.

All cells of many realizations are handled at once: entries are keyed by (realization,
cell) and summed with ``bincount`` in their given order, so a realization's cells do not
depend on the other realizations in the call.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from resim.detector_spec import CalorimeterSpec

from .bins import Bins
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
        # The ring of each cell (int32: half the cache footprint of int64).
        self.ring = np.repeat(np.arange(len(phi_bins), dtype=np.int32), self.phi_bins)
        # Per ring, with a ring of no cells (first cell -1) below and above the grid.
        self._rings = Bins(self.eta_edges)
        self._first = np.concatenate([[-1], self.first[:-1], [-1]])
        self._per_radian = np.concatenate([[0.0], self.phi_bins / (2 * np.pi), [0.0]])
        self._per_radian32 = self._per_radian.astype(np.float32)
        self._last_phi = np.concatenate([[0], self.phi_bins - 1, [0]])

    def cell(self, eta: np.ndarray, phi: np.ndarray) -> np.ndarray:
        """Cell index of each (η, φ), -1 outside the grid (in φ's precision)."""
        ring = self._rings.rank(eta)
        single = np.asarray(phi).dtype == np.float32
        per_radian = self._per_radian32 if single else self._per_radian
        j = np.minimum(((phi + np.pi) * per_radian.take(ring)).astype(np.int64),
                       self._last_phi.take(ring))
        return self._first.take(ring) + np.maximum(j, 0)

    def bounds(self, cells: np.ndarray, dtype: type = np.float64
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(η low, η high, φ low, φ high) of cells, as ``dtype``."""
        ring = self.ring.take(cells)  # int32: gathers by it with take, not indexing
        width: np.ndarray = (2 * np.pi / self.phi_bins.take(ring)).astype(dtype, copy=False)
        phi_lo = (cells - self.first.take(ring)).astype(dtype) * width
        phi_lo -= dtype(np.pi)
        edges: np.ndarray = self.eta_edges.astype(dtype, copy=False)
        return edges.take(ring), edges.take(ring + 1), phi_lo, phi_lo + width


@dataclass
class Deposits:
    """What reaches one calorimeter: particle energies per cell, and the tracks that
    point at them.

    ``event`` is the realization (index into the keys), ``cell`` the cell index. A track
    is subtracted in the cell of its own particle's deposit, ``track_of`` (index into the
    deposits); ``track_sigma2`` is the squared resolution of its ``track_energy``."""

    event: np.ndarray
    cell: np.ndarray
    energy: np.ndarray
    track_of: np.ndarray
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
        # The resolution of each ring, at its centre: σ(E)² = a E² + b E + c.
        edges = self.grid.eta_edges
        centre = np.abs(0.5 * (edges[:-1] + edges[1:]))
        self._a, self._b, self._c = ((x * spec.resolution_scale**2).astype(np.float32)
                                     for x in spec.resolution.coefficients(centre))

    def measure(self, d: Deposits, keys: np.ndarray, leading: bool = False) -> Measured:
        """Smear every hit cell, subtract tracks, make neutral candidates (and find each
        one's leading deposit if ``leading``)."""
        spec, n = self.spec, self.grid.n_cells
        event, cell, group, by_cell, starts = _cells_hit(d.event, d.cell, n)
        m = len(cell)
        true = _sums(group, d.energy, m)
        track_group = group.take(d.track_of)
        tracks = _sums(track_group, d.track_energy, m)
        track_s2 = _sums(track_group, d.track_sigma2, m)
        ring = self.grid.ring.take(cell)  # int32: take gathers by it twice as fast
        coefficients = self._a.take(ring), self._b.take(ring), self._c.take(ring)
        sigma = _sigma(true, *coefficients)
        energy = lognormal(true, sigma, normal(keys, self.stream, cell, event, single=True))
        if spec.energy_scale != 1:
            energy *= np.float32(spec.energy_scale)
        sigma = _sigma(energy, *coefficients)  # Delphes: at the measured energy
        energy[(energy < spec.energy_min) | (energy < spec.significance_min * sigma)] = 0.0

        excess = np.maximum(energy - tracks, 0.0)
        combined = np.sqrt(track_s2 + sigma * sigma)
        significant = (excess > spec.energy_min) & (
            excess > spec.significance_min * combined)
        # No significant excess: the tracks take the best estimate of the charged energy
        # (worked out for the cells with tracks alone: few in the ECAL).
        f4 = np.float32
        scale = np.ones(m, f4)
        t = np.flatnonzero(tracks > 0)
        t_s2, t_sigma, t_tracks = track_s2[t], sigma[t], tracks[t]
        w_track = np.divide(1.0, t_s2, out=np.zeros(len(t), f4), where=t_s2 > 0)
        w_cell = np.divide(1.0, t_sigma * t_sigma, out=np.zeros(len(t), f4), where=t_sigma > 0)
        rescale = ~significant[t] & (w_track + w_cell > 0)
        best = np.divide(w_track * t_tracks + w_cell * energy[t], w_track + w_cell,
                         out=t_tracks.copy(), where=rescale)
        scale[t] = np.divide(best, t_tracks, out=np.ones(len(t), f4), where=rescale)

        c = np.flatnonzero(significant)
        ec = event[c]
        eta_lo, eta_hi, phi_lo, phi_hi = self.grid.bounds(cell[c], f4)
        if spec.smear_cell_center:
            eta = eta_lo + (eta_hi - eta_lo) * uniform(keys, self.stream + 1, cell[c], ec, True)
            phi = phi_lo + (phi_hi - phi_lo) * uniform(keys, self.stream + 2, cell[c], ec, True)
        else:
            eta, phi = 0.5 * (eta_lo + eta_hi), 0.5 * (phi_lo + phi_hi)
        top = _leading(d.energy, by_cell, starts) if leading else np.full(m, -1, np.int64)
        return Measured(event=event[c], cell=cell[c], energy=excess[c], eta=eta, phi=phi,
                        leading=top[c], track_scale=scale.take(track_group))


def _sigma(energy: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """σ(E) = sqrt(a E² + b E + c)."""
    return np.sqrt(np.maximum(a * energy * energy + b * energy + c, 0.0))


def _sums(group: np.ndarray, values: np.ndarray, m: int) -> np.ndarray:
    """Sum of ``values`` per group (accumulated in float64), as float32."""
    return np.bincount(group, weights=values, minlength=m).astype(np.float32)


def _leading(energy: np.ndarray, by_group: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Per group, the entry with the most energy (the first of equals), from the entries
    ordered by group (``by_group``), group g starting at ``starts[g]``: one pass, no
    second sort."""
    if not len(starts):
        return np.empty(0, np.int64)
    e = energy[by_group]
    most = np.maximum.reduceat(e, starts)
    at_most = np.flatnonzero(e == np.repeat(most, np.diff(np.append(starts, len(e)))))
    group = np.searchsorted(starts, at_most, side="right") - 1
    first = np.ones(len(at_most), bool)
    first[1:] = group[1:] != group[:-1]
    top = np.empty(len(starts), np.int64)
    top[group[first]] = by_group[at_most[first]]
    return top


def _cells_hit(event: np.ndarray, cell: np.ndarray, n_cells: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The distinct (event, cell) pairs in increasing order (their events, their cells),
    the position of each entry's among them, the entries in that order (a stable sort)
    and where each pair's entries start in it."""
    cell_bits = max(int(n_cells - 1).bit_length(), 1)
    bits = cell_bits + (int(event[-1]).bit_length() if len(event) else 0)
    kind = np.uint32 if bits <= 32 else np.uint64  # half the memory when it fits
    key = np.left_shift(event.astype(kind), kind(cell_bits))
    key |= cell.astype(kind)
    order = _stable_order(key, bits)
    ordered = key[order]
    new = np.ones(len(key), bool)
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    group = np.empty(len(key), np.int64)
    group[order] = np.cumsum(new) - 1
    first = ordered[starts]
    return ((first >> kind(cell_bits)).astype(np.int64),
            (first & kind((1 << cell_bits) - 1)).astype(np.int64), group, order, starts)


def _stable_order(key: np.ndarray, bits: int) -> np.ndarray:
    """``np.argsort(key, kind="stable")`` of unsigned keys below 2**bits, as radix passes
    over 16-bit digits, least significant first: numpy sorts 16-bit keys by radix sort,
    several times faster than its merge sort of wider ones."""
    order = np.argsort(key.astype(np.uint16), kind="stable")  # the low 16 bits
    for shift in range(16, bits, 16):
        digit = (key[order] >> key.dtype.type(shift)).astype(np.uint16)
        order = order[np.argsort(digit, kind="stable")]
    return order


def lognormal(mean: np.ndarray, sigma: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Log-normal numbers with the given mean and standard deviation (Delphes' LogNormal),
    from standard normal ``z``; 0 where the mean is not positive."""
    positive = mean > 0
    every = bool(positive.all())  # as a rule: no masking then
    safe = mean if every else np.where(positive, mean, 1.0)
    b2 = np.log1p((sigma / safe) ** 2)
    x = np.exp(np.log(safe) - 0.5 * b2 + np.sqrt(b2) * z)
    return x if every else np.where(positive, x, 0.0)


__all__ = ["Calorimeter", "CellGrid", "Deposits", "Measured", "lognormal"]

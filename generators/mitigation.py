"""Pileup mitigation on the detector's candidates: vertex association, charged-hadron
subtraction (CHS) and PUPPI, columnar over every realization of a block.

**Vertex association** (every candidate gets a ``vertex``: 0 primary, 1 pileup, -1 none
for calorimeter candidates), after CMS (arXiv:2003.00503): a track pointing at the beam
line (|d0| < ``d0_significance`` · d0_err, as CMS selects tracks for its vertex fits)
whose measured dz is within ``dz_significance`` · dz_err of a vertex would be in that
vertex's fit: it belongs to the primary vertex (z = 0, the frame of :mod:`.pileup`) if it
is in its fit, else to a pileup vertex whose fit it is in (each pileup vertex taken as
reconstructed where it is); a track in no vertex's fit (a decay product of a K0S or Λ,
say) belongs to the primary vertex if its |dz| < ``dz_max``
(CMS's PUPPI: DeltaZCut 0.3 cm) or if no pileup vertex is nearer (CMS's CHS), else to
the nearest pileup vertex. Delphes' TrackPileUpSubtractor, as JetClass-II ran it, uses
the true vertex instead.

**CHS** drops the tracks of pileup vertices.

**PUPPI** (Bertolini, Harris, Low, Tran, arXiv:1407.6013; parameters and conventions of
JetClass-II's Delphes RunPUPPI, ``cards/pileup/jetclass2.toml``): in each |η| region, each
candidate i gets α_i = log Σ_j pT_j² / ΔR_ij² over the charged candidates j of the primary
vertex with min_dr ≤ ΔR_ij < cone (leptons excluded, as JetClass-II runs PUPPI without
them). The median and the RMS (below the median) of α over the charged candidates of
pileup vertices with pT ≥ rms_pt_min, per realization and region, calibrate what pileup
looks like: a neutral candidate's weight is the χ²(1) CDF of (α_i − median)|α_i −
median| / RMS² (0 for a candidate with no primary-vertex track around, 1 in a region
without pileup tracks); tracks weigh 1 (primary vertex) or 0 (pileup). Weights below
``weight_min``, and neutral candidates whose weighted pT is below ``neutral_pt_min +
neutral_pt_slope · N_PV``, go to 0.

**How weights enter the candidates**, as Delphes' PuppiParticles: four-momenta scaled by
the weight, weight-0 candidates dropped; the weight is kept in the ``weight`` column (so a
study can undo it) and detector-level jets are clustered from what remains.
"""

from __future__ import annotations

import numpy as np
from scipy.special import erf, ndtri

from resim.layout import ELECTRON, MUON
from resim.pileup_spec import PileupSpec, PuppiSpec

from .final_state import FinalState

PRIMARY, PILEUP, NO_VERTEX = 0, 1, -1
#: Primary-vertex tracks whose neighbours are looked up together (~20 each: bounded memory).
_NEIGHBOURS_AT_ONCE = 50_000
#: Realizations are laid side by side in z this far apart (mm) to find, in one sorted
#: array, each track's nearest pileup vertex in its own realization.
_SPAN = 1e6


def associate(candidates: FinalState, vertex_z: np.ndarray, n_pileup: np.ndarray,
              spec: PileupSpec) -> np.ndarray:
    """The vertex (PRIMARY, PILEUP, NO_VERTEX) of every candidate."""
    c = candidates.columns
    event = candidates.event_index()
    track = np.flatnonzero(c["charge"] != 0)
    vertex = np.full(len(event), NO_VERTEX, np.int8)
    dz = np.clip(np.asarray(c["dz"][track], float), -_SPAN / 4, _SPAN / 4)
    # Pileup vertices of all realizations in one increasing array.
    owner = np.repeat(np.arange(len(n_pileup)), n_pileup)
    placed = np.sort(owner * _SPAN + vertex_z)
    at = event[track] * _SPAN + dz
    i = np.searchsorted(placed, at)
    nearest = np.full(len(track), np.inf)
    for j in (i - 1, i):
        valid = (j >= 0) & (j < len(placed))
        gap = np.abs(placed[np.clip(j, 0, max(len(placed) - 1, 0))] - at) if len(placed) else 0
        nearest = np.where(valid & (gap < _SPAN / 2), np.minimum(nearest, gap), nearest)
    to_primary = np.abs(dz)
    window = spec.dz_significance * c["dz_err"][track]
    pointing = np.abs(c["d0"][track]) < spec.d0_significance * c["d0_err"][track]
    in_primary = pointing & (to_primary < window)
    in_pileup = pointing & (nearest < window)
    unfitted = (to_primary < spec.dz_max) | (to_primary <= nearest)
    primary = in_primary | (~in_pileup & unfitted)
    vertex[track] = np.where(primary, PRIMARY, PILEUP)
    return vertex


def mitigate(candidates: FinalState, vertex_z: np.ndarray, n_pileup: np.ndarray,
             spec: PileupSpec) -> FinalState:
    """The candidates as jets see them after ``spec.mitigation``, with columns ``vertex``
    and ``weight`` added (four-momenta scaled by the weight, weight-0 ones dropped)."""
    vertex = associate(candidates, vertex_z, n_pileup, spec)
    weight = np.ones(len(vertex))
    if spec.mitigation == "chs":
        weight[vertex == PILEUP] = 0.0
    elif spec.mitigation == "puppi":
        weight = puppi_weights(candidates, vertex, n_pileup, spec.puppi)
    columns = {**candidates.columns, "vertex": vertex, "weight": weight.astype(np.float32)}
    if spec.mitigation != "none":
        for name in ("px", "py", "pz", "E"):
            columns[name] = columns[name] * weight
    out = FinalState(columns, candidates.offsets)
    return out if spec.mitigation == "none" else out.where(weight > 0)


def puppi_weights(candidates: FinalState, vertex: np.ndarray, n_pileup: np.ndarray,
                  spec: PuppiSpec) -> np.ndarray:
    """PUPPI's weight of every candidate (module docstring)."""
    c = candidates.columns
    event = candidates.event_index()
    n_events = len(candidates)
    pt = np.hypot(c["px"], c["py"])
    eta = np.arcsinh(c["pz"] / np.maximum(pt, 1e-12))
    phi = np.arctan2(c["py"], c["px"])
    edges = np.asarray(spec.eta_edges)
    region = np.searchsorted(edges, np.abs(eta), side="right") - 1
    region[region >= len(edges) - 1] = -1  # beyond the last region: untouched
    charged = c["charge"] != 0
    lepton = np.isin(c["kind"], (ELECTRON, MUON))
    neighbour = charged & ~lepton & (vertex == PRIMARY)  # the j of the sums
    rms_pt_min = np.asarray(spec.rms_pt_min)[region]
    # alpha is needed for neutrals (their weights) and, above rms_pt_min, for charged
    # hadrons (pileup ones calibrate, primary ones correct at low pileup).
    wanted = (region >= 0) & ~lepton & (~charged | (pt >= rms_pt_min))
    alpha = _alpha(event, eta, phi, pt, region, wanted, neighbour, spec)

    n_regions = len(edges) - 1
    group = event * n_regions + np.maximum(region, 0)  # (realization, region)
    calibrating = wanted & charged & (vertex == PILEUP) & np.isfinite(alpha)
    low = np.tile(np.asarray(spec.low_pileup_correction), n_events)
    median, rms, has_pileup = _median_rms(group[calibrating], alpha[calibrating], low)
    rms *= np.tile(np.asarray(spec.rms_scale), n_events)
    if low.any():
        # Primary-vertex particles with alpha below the pileup median (an isolated one,
        # alpha = -inf, is below): the median and RMS are moved down so that a
        # primary-vertex-like fraction of them keeps its weight.
        pv = wanted & charged & (vertex == PRIMARY)
        below = pv & ~(alpha > median[group])
        n_pv = np.bincount(group[below], minlength=len(median))
        n_pu = np.bincount(group[calibrating], minlength=len(median))
        fraction = np.divide(n_pv, n_pv + 0.5 * n_pu, out=np.zeros(len(median)),
                             where=n_pv + n_pu > 0)
        shift = np.sqrt(_chi2_quantile(fraction) * rms)
        apply = low & has_pileup & (fraction > 0)
        median = np.where(apply, median - shift, median)
        rms = np.where(apply, rms - shift, rms)

    g = group
    a = np.where(np.isfinite(alpha), alpha, median[g])
    diff = a - median[g]
    chi2 = diff * np.abs(diff) / np.maximum(rms[g] ** 2, 1e-10)
    weight = np.zeros(len(chi2))
    positive = np.flatnonzero(chi2 > 0)
    weight[positive] = erf(np.sqrt(0.5 * chi2[positive]))  # the chi2(1) CDF
    weight = np.where(has_pileup[g], weight, 1.0)
    weight[charged] = (vertex[charged] == PRIMARY).astype(float)
    weight[weight < spec.weight_min] = 0.0
    n_pv = np.maximum(1.0, spec.vertex_efficiency * (1.0 + np.asarray(n_pileup, float)))
    cut = (np.asarray(spec.neutral_pt_min)[region]
           + np.asarray(spec.neutral_pt_slope)[region] * n_pv[event])
    weight[~charged & (weight * pt < cut)] = 0.0
    weight[region < 0] = 1.0
    return weight


def _alpha(event: np.ndarray, eta: np.ndarray, phi: np.ndarray, pt: np.ndarray,
           region: np.ndarray, wanted: np.ndarray, neighbour: np.ndarray,
           spec: PuppiSpec) -> np.ndarray:
    """α of the ``wanted`` candidates (nan elsewhere, -inf with no neighbour in the cone):
    pairs are found on a grid of cells as wide as the largest cone (a table of where each
    cell's candidates start), each neighbour j looking into its own and the 8 adjacent
    cells."""
    alpha = np.full(len(eta), np.nan)
    cone = np.asarray(spec.cone)
    size = float(cone.max())
    n_phi = int(2 * np.pi / size)  # >= 4: each cell at least `size` wide
    n_eta = 2 * int(np.ceil(12.0 / size)) + 4

    def cells(rows: np.ndarray, d_eta: int = 0, d_phi: int = 0) -> np.ndarray:
        ie = np.clip(np.floor(eta[rows] / size).astype(np.int64) + n_eta // 2, 1, n_eta - 2)
        ip = np.minimum(((phi[rows] + np.pi) / (2 * np.pi) * n_phi).astype(np.int64),
                        n_phi - 1)
        return (event[rows] * n_eta + ie + d_eta) * n_phi + (ip + d_phi) % n_phi

    i_rows = np.flatnonzero(wanted)
    keys = cells(i_rows)
    order = np.argsort(keys, kind="stable")
    n_cells = (int(event.max()) + 1 if len(event) else 1) * n_eta * n_phi
    in_cell = np.bincount(keys, minlength=n_cells)
    cell_start = np.cumsum(in_cell) - in_cell
    total = np.zeros(len(eta))
    # In slices of neighbours, to bound the memory the pairs take.
    all_j = np.flatnonzero(neighbour)
    for first in range(0, len(all_j), _NEIGHBOURS_AT_ONCE):
        j_rows = all_j[first:first + _NEIGHBOURS_AT_ONCE]
        pair_i, pair_j = [], []
        for d_eta in (-1, 0, 1):
            for d_phi in (-1, 0, 1):
                target = cells(j_rows, d_eta, d_phi)
                lo, n = cell_start[target], in_cell[target]
                pair_j.append(np.repeat(j_rows, n))
                start = np.repeat(lo - (np.cumsum(n) - n), n)
                pair_i.append(i_rows[order[start + np.arange(n.sum())]])
        pi, pj = np.concatenate(pair_i), np.concatenate(pair_j)
        d_phi = np.abs(phi[pi] - phi[pj])
        d_phi = np.minimum(d_phi, 2 * np.pi - d_phi)
        dr2 = (eta[pi] - eta[pj]) ** 2 + d_phi * d_phi
        near = (dr2 >= spec.min_dr**2) & (dr2 < cone[region[pi]] ** 2)
        terms = np.divide(pt[pj] ** 2, dr2, out=np.zeros(len(dr2)), where=near)
        total += np.bincount(pi, weights=terms, minlength=len(eta))
    with np.errstate(divide="ignore"):
        alpha[i_rows] = np.log(total[i_rows])
    return alpha


def _median_rms(group: np.ndarray, values: np.ndarray, one_sided: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per group: the median (the element at N // 2 in increasing order, as Delphes),
    the RMS about it (of the values not above it where ``one_sided``; 1e-5 if 0), and
    whether the group has any value."""
    n_groups = len(one_sided)
    if len(values):  # sort by (group, value) with one float key: faster than lexsort
        lo, hi = values.min(), values.max()
        order = np.argsort(group + (values - lo) / (2 * (hi - lo) + 1e-300))
    else:
        order = np.zeros(0, np.int64)
    g, v = group[order], values[order]
    count = np.bincount(g, minlength=n_groups)
    start = np.cumsum(count) - count
    has = count > 0
    median = np.zeros(n_groups)
    median[has] = v[start[has] + count[has] // 2]
    below = (v <= median[g]) | ~one_sided[g]
    squares = np.bincount(g[below], weights=(v[below] - median[g[below]]) ** 2,
                          minlength=n_groups)
    n_below = np.bincount(g[below], minlength=n_groups)
    rms = np.sqrt(np.divide(squares, n_below, out=np.zeros(n_groups), where=n_below > 0))
    rms[rms == 0] = 1e-5
    return median, rms, has


def _chi2_quantile(p: np.ndarray) -> np.ndarray:
    """Quantile of the χ² distribution with one degree of freedom."""
    return ndtri(0.5 * (1.0 + np.clip(p, 0.0, 1.0 - 1e-16))) ** 2


__all__ = ["NO_VERTEX", "PILEUP", "PRIMARY", "associate", "mitigate", "puppi_weights"]

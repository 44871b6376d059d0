"""The detector stage: its parametrizations reproduced by what it simulates (a particle
gun, as a test beam would measure them), its geometry, its particle flow, its random
numbers, its card section, and the data sets it makes."""

from __future__ import annotations

import tomllib
from pathlib import Path

import awkward as ak
import numpy as np
import pytest

import resim
from resim.card import CardError, load_card, parse_card
from resim.detector_spec import merge, parse, preset_text
from resim.generators.bins import Bins, Resolution, TableLookup
from resim.generators.calorimeter import CellGrid, _cells_hit
from resim.generators.detector import CANDIDATE_COLUMNS, Detector
from resim.generators.final_state import FinalState
from resim.generators.propagation import (
    from_beam_line,
    helix_impact_parameters,
    impact_parameters,
    remainder,
    to_cylinder,
)
from resim.generators.seeds import derive_key, normal, normal_pair, uniform
from resim.layout import (
    CHARGED_HADRON,
    ELECTRON,
    FORMAT_VERSION,
    KINDS,
    MUON,
    NEUTRAL_HADRON,
    PHOTON,
)

from .documented import undocumented_keys

CARDS = Path(__file__).parents[1] / "cards"
DATA = Path(__file__).parents[1] / "data"


def cms(**overrides) -> Detector:
    """The cms preset with some keys overridden (nested dicts, as in a card)."""
    raw = merge(tomllib.loads(preset_text("cms")), overrides)
    raw["preset"] = "cms"
    return Detector(parse(_table(raw)))


def _table(raw):
    from resim.card import _Table

    return _Table("test", raw, "detector.")


def gun(pid: int, charge: int, pt: np.ndarray, eta: np.ndarray, phi: np.ndarray | None = None,
        mass: float = 0.13957, vertex: tuple[np.ndarray, ...] | None = None,
        per_event: int = 1) -> FinalState:
    """Single particles (``per_event`` per realization) from the origin or ``vertex``."""
    n = len(pt)
    rng = np.random.default_rng(7)
    phi = rng.uniform(-np.pi, np.pi, n) if phi is None else phi
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    zero = np.zeros(n)
    vx, vy, vz = vertex if vertex is not None else (zero, zero, zero)
    columns = {"px": px, "py": py, "pz": pz, "E": np.sqrt(px**2 + py**2 + pz**2 + mass**2),
               "pid": np.full(n, pid, np.int32), "charge": np.full(n, charge, np.int8),
               "vx": vx, "vy": vy, "vz": vz}
    return FinalState(columns, np.arange(0, n + 1, per_event, dtype=np.int64))


def keys(n: int, salt: str = "test") -> np.ndarray:
    return np.array([derive_key(1, salt, i) for i in range(n)], np.uint64)


def width_within_errors(z: np.ndarray) -> tuple[float, float]:
    """Standard deviation of ``z`` and its statistical error (from the fourth moment)."""
    s2 = z.var()
    m4 = np.mean((z - z.mean()) ** 4)
    return float(np.sqrt(s2)), float(np.sqrt((m4 - s2**2) / len(z)) / (2 * np.sqrt(s2)))


# ------------------------------------------------------------------ random numbers


def test_counter_random_numbers_are_uniform_normal_and_independent():
    from scipy import stats

    k = np.full(100_000, derive_key(3, "x"), np.uint64)
    i = np.arange(100_000)
    u = uniform(k, 0, i)
    assert u.min() > 0 and u.max() < 1 and stats.kstest(u, "uniform").pvalue > 1e-3
    z = normal(k, 1, i)
    assert stats.kstest(z, "norm").pvalue > 1e-3
    a, b = normal_pair(k, 1, i)
    assert np.array_equal(a, z) and abs(np.corrcoef(a, b)[0, 1]) < 0.02
    other = uniform(np.full(100_000, derive_key(3, "y"), np.uint64), 0, i)
    assert abs(np.corrcoef(u, uniform(k, 2, i))[0, 1]) < 0.02
    assert abs(np.corrcoef(u, other)[0, 1]) < 0.02
    # a pure function of (key, stream, counter): any subset, any order
    assert np.array_equal(uniform(k[::-7], 0, i[::-7]), u[::-7])


def test_single_precision_random_numbers_are_the_same_draws():
    """The detector's float32 numbers are its float64 ones rounded: uniforms from their
    top 23 bits, strictly inside (0, 1); normals to 1e-6 (so their tails reach as far)."""
    k = np.full(200_000, derive_key(3, "x"), np.uint64)
    i = np.arange(200_000)
    u, u32 = uniform(k, 0, i), uniform(k, 0, i, single=True)
    assert u32.dtype == np.float32 and u32.min() > 0 and u32.max() < 1
    assert np.abs(u32 - u).max() <= 2.0**-23
    z, z32 = normal(k, 1, i), normal(k, 1, i, single=True)
    assert z32.dtype == np.float32 and np.allclose(z32, z, rtol=1e-6, atol=1e-6)
    assert np.array_equal(normal_pair(k, 1, i, single=True)[0], z32)


# ---------------------------------------------------------------------- geometry


def test_helices_reach_the_cylinder_and_the_closed_form_agrees():
    rng = np.random.default_rng(0)
    n = 50_000
    pt = np.exp(rng.uniform(np.log(0.05), np.log(500), n))
    phi, eta = rng.uniform(-np.pi, np.pi, n), rng.uniform(-6, 6, n)
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    q = rng.choice([-1.0, 1.0, 0.0, 2.0], n)
    z0 = np.where(rng.random(n) < 0.5, 0.0, rng.normal(0, 50, n))
    x, y, z, ok = to_cylinder(0 * z0, 0 * z0, z0, px, py, pz, q, 3.8, 1290.0, 3000.0)
    assert ok.all()
    on_barrel = np.isclose(np.hypot(x, y), 1290.0)
    on_endcap = np.isclose(np.abs(z), 3000.0)
    assert (on_barrel | on_endcap).all()
    # A helix from the axis meets the barrel at phi0 -+ asin(R / 2r) (clockwise for q > 0).
    r = pt / (0.299792458 * 3.8 * np.abs(np.where(q == 0, 1, q))) * 1000
    barrel = on_barrel & ~on_endcap & (q != 0)
    turn = (np.arctan2(y, x) - phi + np.pi) % (2 * np.pi) - np.pi
    assert np.allclose(turn[barrel], -np.sign(q[barrel]) * np.arcsin(1290 / (2 * r[barrel])))
    eta_b, phi_b, ok_b = from_beam_line(z0, px, py, pz, q, 3.8, 1290.0, 3000.0)
    assert np.array_equal(ok_b, ok)
    assert np.allclose(eta_b, np.arcsinh(z / np.hypot(x, y)), atol=1e-8)
    assert np.allclose(np.cos(phi_b - np.arctan2(y, x)), 1.0)


def test_single_precision_propagation_agrees_with_double():
    """What the detector runs: the closed form on float32 momenta, and helices with
    single-precision angles (displaced particles), land within a small fraction of a
    calorimeter cell (~0.02 in η and φ) of the double-precision answers."""
    rng = np.random.default_rng(4)
    n = 50_000
    pt = np.exp(rng.uniform(np.log(0.05), np.log(2000), n))
    phi, eta = rng.uniform(-np.pi, np.pi, n), rng.uniform(-5, 5, n)
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    q = rng.choice([-1, 1, 0], n)
    z0 = np.where(rng.random(n) < 0.5, 0.0, rng.normal(0, 50, n))
    f4 = np.float32
    eta64, phi64, ok64 = from_beam_line(z0, px, py, pz, q, 3.8, 1290.0, 3000.0)
    eta32, phi32, ok32 = from_beam_line(*(v.astype(f4) for v in (z0, px, py, pz)), q,
                                        3.8, 1290.0, 3000.0)
    assert eta32.dtype == phi32.dtype == f4 and np.array_equal(ok32, ok64)
    d_eta = np.abs(eta32 - eta64)
    d_phi = np.abs(remainder(phi32 - phi64 + np.pi, 2 * np.pi) - np.pi)
    # Loopers (helices too tight to reach the barrel) meet an endcap after turning by
    # alpha radians: ill-conditioned, 1e-7 more momentum moves them by ~1e-7 alpha.
    radius = 1000 * pt / (0.299792458 * 3.8)
    looper = (q != 0) & (radius < 1290.0 / 2)
    alpha = (3000.0 - np.abs(z0)) * pt / np.maximum(np.abs(pz) * radius, 1e-300)
    assert looper.sum() > 5000
    assert d_eta[~looper].max() < 2e-6 and d_phi[~looper].max() < 5e-6
    assert (d_phi[looper] < 2e-6 * (1 + alpha[looper])).all()
    assert d_eta[looper & (np.abs(eta64) < 5)].max() < 0.02  # (cells: 0.087 and wider)
    assert np.percentile(d_eta[looper], 99) < 1e-3
    vx, vy, vz = rng.normal(0, 100, n), rng.normal(0, 100, n), rng.normal(0, 300, n)
    fine = to_cylinder(vx, vy, vz, px, py, pz, q, 3.8, 1290.0, 3000.0)
    coarse = to_cylinder(vx, vy, vz, px, py, pz, q, 3.8, 1290.0, 3000.0, coarse=True)
    assert np.array_equal(fine[3], coarse[3])
    moved = np.sqrt(sum((a - b) ** 2 for a, b in zip(fine[:3], coarse[:3], strict=True)))
    assert (moved[q == 0] == 0).all()  # straight lines: the same arithmetic
    # ~5e-7 of the helix radius (0.5 mm for 1 TeV), and loopers by their turns
    alpha = (3000.0 - np.abs(vz)) * pt / np.maximum(np.abs(pz) * radius, 1e-300)
    assert (moved[q != 0] < 1e-6 * (radius * (1 + alpha))[q != 0]).all()


def test_remainder_is_numpys_bit_for_bit():
    period = 2 * np.pi
    k = np.arange(-5, 6) * period
    x = np.concatenate([k, np.nextafter(k, np.inf), np.nextafter(k, -np.inf), k / 2,
                        [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-320, -1e-320],
                        np.random.default_rng(3).uniform(-5 * period, 5 * period, 200_000)])
    with np.errstate(invalid="ignore"):
        assert np.array_equal(remainder(x, period).view(np.int64),
                              np.mod(x, period).view(np.int64))


def test_helix_impact_parameters_are_the_closest_approach():
    rng = np.random.default_rng(1)
    n = 300
    pt = rng.uniform(0.3, 3.0, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * rng.normal(0, 1, n)
    q = rng.choice([-1.0, 1.0], n)
    vx, vy, vz = rng.normal(0, 30, n), rng.normal(0, 30, n), rng.normal(0, 30, n)
    d0, dz = helix_impact_parameters(vx, vy, vz, px, py, pz, q, 3.8)
    # Brute force: walk along each helix (both ways) and take the point nearest the axis.
    r = pt / (0.299792458 * 3.8) * 1000 * q
    xc, yc = vx + r * np.sin(phi), vy - r * np.cos(phi)
    theta0 = np.arctan2(vy - yc, vx - xc)

    def nearest(alpha):  # (distance to the axis, turning angle) of the nearest sample
        theta = theta0 - np.sign(r) * alpha
        x, y = xc + np.abs(r) * np.cos(theta), yc + np.abs(r) * np.sin(theta)
        best = np.argmin(x * x + y * y, axis=0)
        cols = np.arange(n)
        return np.hypot(x[best, cols], y[best, cols]), alpha[best, cols]

    _, coarse = nearest(np.linspace(-np.pi, np.pi, 20_001)[:, None] + 0 * r)
    distance, alpha = nearest(coarse + np.linspace(-4e-4, 4e-4, 20_001)[:, None])
    assert np.allclose(np.abs(d0), distance, atol=1e-5)
    assert np.allclose(dz, vz + np.abs(r) * alpha * pz / pt, atol=1e-4)
    # High momenta: the straight line's values.
    hi = helix_impact_parameters(vx, vy, vz, 1e6 * px, 1e6 * py, 1e6 * pz, q, 3.8)
    line = impact_parameters(px, py, pz, vx, vy, vz)
    assert np.allclose(hi[0], line[0], atol=1e-4) and np.allclose(hi[1], line[1], atol=1e-3)


def test_cells_are_found_and_contain_their_points():
    grid = CellGrid(((-5.0, -2.958, 2, 36), (-2.958, 2.958, 340, 360), (2.958, 5.0, 3, 18)))
    rng = np.random.default_rng(2)
    eta, phi = rng.uniform(-5.5, 5.5, 100_000), rng.uniform(-np.pi, np.pi, 100_000)
    cell = grid.cell(eta, phi)
    inside = (eta >= -5.0) & (eta < 5.0)
    assert np.array_equal(cell >= 0, inside)
    lo, hi, plo, phi_hi = grid.bounds(cell[inside])
    assert ((lo <= eta[inside]) & (eta[inside] < hi)).all()
    assert ((plo <= phi[inside] + 1e-12) & (phi[inside] < phi_hi + 1e-12)).all()
    assert grid.n_cells == 2 * 36 + 340 * 360 + 3 * 18


def test_table_lookups_are_the_specs_own_evaluation():
    """The detector's O(1) lookups give the spec's binary-search values exactly, on the
    bin edges, between them, beyond them and on each side of every edge."""
    spec = cms().spec
    tr = spec.tracking
    rng = np.random.default_rng(5)
    for table in (tr.charged_hadron.efficiency, tr.electron.efficiency, tr.muon.efficiency,
                  tr.d0_resolution, tr.dz_resolution, spec.identification.photon,
                  spec.identification.electron):
        edges = np.array([*table.eta_edges, *table.pt_edges])
        near = np.concatenate([edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf)])
        x = np.concatenate([near, rng.uniform(-1, 6, 5000), np.exp(rng.uniform(-4, 7, 5000)),
                            [0.0, -0.0, 1e300, -1e300]])
        for pt, eta in ((x, rng.permutation(x)), (rng.permutation(x), x)):
            assert np.array_equal(TableLookup(table)(pt, eta), table(pt, eta))
        odd = np.array([np.inf, -np.inf, np.nan, 1.0])  # searched: no grid cell
        assert np.array_equal(TableLookup(table)(odd, odd[::-1]), table(odd, odd[::-1]))
    for cls in (tr.charged_hadron, tr.electron, tr.muon):
        x = np.concatenate([np.asarray(cls.resolution.eta_edges), rng.uniform(0, 6, 5000)])
        pt = np.exp(rng.uniform(-3, 8, len(x)))
        assert np.array_equal(Resolution(cls.resolution)(pt, x), cls.resolution(pt, x))
    edges = np.array([0.1, 0.2227, 0.2720, 1.0, 134.7])
    x = np.concatenate([rng.uniform(-1, 200, 10_000), edges, np.nextafter(edges, -1)])
    assert np.array_equal(Bins(edges).index(x), np.searchsorted(edges, x, side="right") - 1)
    # float32 values: against the edges rounded to float32, on and beside each of them
    for b in (Bins(edges), Bins(TableLookup(tr.d0_resolution).pt.edges), Bins(edges[:3])):
        e32 = b.edges.astype(np.float32)
        x32 = np.concatenate([e32, np.nextafter(e32, -np.inf), np.nextafter(e32, np.inf),
                              rng.uniform(-1, 1.1 * e32[-1], 10_000).astype(np.float32)])
        assert np.array_equal(b.rank(x32), np.searchsorted(e32, x32, side="right"))
    # bins far narrower than their range (a card's choice) would need a huge grid: searched
    narrow = np.array([0.0, 1e-9, 1.0, 5.0, 10.0])
    assert not Bins(narrow)._grid and Bins(edges)._grid
    assert np.array_equal(Bins(narrow).rank(x), np.searchsorted(narrow, x, side="right"))


def test_cells_are_grouped_as_a_stable_sort_would():
    """The radix grouping of deposits by (realization, cell): the same groups, group
    order and entry order as np.unique and a stable argsort, for keys of 32 bits and
    wider."""
    rng = np.random.default_rng(0)
    for n_events, n_cells in ((134, 123_192), (40_000, 123_192), (3, 50)):
        event = np.sort(rng.integers(0, n_events, 30_000))
        cell = rng.integers(0, n_cells, 30_000)
        e, c, group, order, starts = _cells_hit(event, cell, n_cells)
        key = event * n_cells + cell
        unique, inverse = np.unique(key, return_inverse=True)
        assert np.array_equal(e * n_cells + c, unique)
        assert np.array_equal(group, inverse)
        assert np.array_equal(order, np.argsort(key, kind="stable"))
        assert np.array_equal(starts, np.searchsorted(key[order], unique))


# --------------------------------------------------- parametrizations, as measured


TRACKER_ONLY = {"calorimeter": {"fractions": {"default": [0.0, 0.0], "11": [0.0, 0.0]}}}


def test_tracking_efficiency_and_pt_resolution_are_the_presets():
    """Pions, electrons and muons through the tracker: found as often as the preset's
    efficiency tables say (binomial errors) and smeared by its resolution formulas
    (residuals in units of the formula's width have width 1 within statistical errors).
    The calorimeters are switched off (no energy shares): the particle flow would combine
    a track with its cell's energy where that measures it better."""
    det = cms(**TRACKER_ONLY)
    spec = det.spec.tracking
    rng = np.random.default_rng(3)
    n = 40_000
    for pid, charge, mass, cls in ((211, 1, 0.1396, spec.charged_hadron),
                                   (11, -1, 0.000511, spec.electron),
                                   (-13, 1, 0.1057, spec.muon)):
        pt = np.exp(rng.uniform(np.log(0.15), np.log(300), n))
        eta = rng.uniform(-2.45, 2.45, n)
        particles = gun(pid, charge, pt, eta, mass=mass)
        cand = det.simulate(particles, keys(n, str(pid)))
        tracks = cand.columns["charge"] != 0
        found = np.zeros(n, bool)
        event = cand.event_index()[tracks]
        found[event] = True
        expected = cls.efficiency(pt, np.abs(eta))
        for e_lo, e_hi in zip(cls.efficiency.eta_edges, cls.efficiency.eta_edges[1:],
                              strict=False):
            for p_lo, p_hi in ((0.15, 1.0), (1.0, 100.0), (100.0, 300.0)):
                sel = (np.abs(eta) >= e_lo) & (np.abs(eta) < e_hi) & (pt >= p_lo) & (pt < p_hi)
                eff = expected[sel].mean()
                err = np.sqrt(eff * (1 - eff) / sel.sum())
                assert abs(found[sel].mean() - eff) < 4 * err + 1e-9, (pid, e_lo, p_lo)
        # One candidate per found particle: its pT smeared by the formula.
        measured = np.hypot(cand.columns["px"], cand.columns["py"])[tracks]
        true = pt[event]
        res = np.minimum(cls.resolution(true, np.abs(eta[event])), 1.0)
        width, error = width_within_errors((measured / true - 1) / res)
        assert abs(width - 1) < 3 * error, (pid, width, error)
        assert abs(np.mean(measured / true - 1)) < 3 * np.std(measured / true - 1) / np.sqrt(
            len(true))


def test_impact_parameters_are_smeared_by_their_stored_uncertainties():
    det = cms(**TRACKER_ONLY)
    rng = np.random.default_rng(4)
    n = 30_000
    pt, eta = np.exp(rng.uniform(np.log(0.3), np.log(200), n)), rng.uniform(-2.4, 2.4, n)
    vertex = (rng.normal(0, 1, n), rng.normal(0, 1, n), rng.normal(0, 5, n))
    particles = gun(211, 1, pt, eta, vertex=vertex)
    cand = det.simulate(particles, keys(n))
    c = cand.columns
    event = cand.event_index()
    true_d0, true_dz = helix_impact_parameters(*vertex, particles.columns["px"],
                                               particles.columns["py"],
                                               particles.columns["pz"], np.ones(n), 3.8)
    table = det.spec.tracking
    measured_pt = np.hypot(c["px"], c["py"])
    assert np.allclose(c["d0_err"], table.d0_resolution(measured_pt, np.abs(eta[event])))
    assert np.allclose(c["dz_err"], table.dz_resolution(measured_pt, np.abs(eta[event])))
    for name, true in (("d0", true_d0), ("dz", true_dz)):
        z = (c[name] - true[event]) / c[f"{name}_err"]
        width, error = width_within_errors(z)
        assert abs(width - 1) < 3 * error and abs(z.mean()) < 3 / np.sqrt(len(z)), name


@pytest.mark.parametrize(("pid", "mass", "calo", "kind"), [
    (22, 0.0, "ecal", PHOTON), (2112, 0.9396, "hcal", NEUTRAL_HADRON),
    (130, 0.4976, "hcal", NEUTRAL_HADRON)])
def test_calorimeter_energy_resolution_is_the_presets(pid, mass, calo, kind):
    """Single neutral particles of 20-200 GeV: one candidate of the calorimeter's kind,
    its energy log-normal with the preset's sigma(E, eta of the cell centre)."""
    det = cms()
    rng = np.random.default_rng(5)
    n = 20_000
    energy = rng.uniform(20, 200, n)
    eta = rng.uniform(-2.3, 2.3, n)
    pt = np.sqrt(energy**2 - mass**2) / np.cosh(eta)
    cand = det.simulate(gun(pid, 0, pt, eta, mass=mass), keys(n, calo))
    assert np.array_equal(cand.counts, np.ones(n))
    assert (cand.columns["kind"] == kind).all()
    calorimeter = getattr(det, calo)
    grid = calorimeter.grid
    ring = grid.ring[grid.cell(eta, np.zeros(n))]  # rings: η only
    centre = np.abs(0.5 * (grid.eta_edges[ring] + grid.eta_edges[ring + 1]))
    sigma = calorimeter.spec.resolution(energy, centre) * calorimeter.spec.resolution_scale
    z = (cand.columns["E"] - energy) / sigma
    width, error = width_within_errors(z)
    assert abs(width - 1) < 3 * error, (width, error)
    assert abs(z.mean()) < 3 / np.sqrt(n)


def test_identification_efficiencies_are_as_set():
    det = cms(identification={"electron": {"values": [[0.8]]}, "muon": {"values": [[0.6]]},
                              "photon": {"values": [[0.9]]}})
    n = 20_000
    rng = np.random.default_rng(6)
    pt, eta = rng.uniform(5, 100, n), rng.uniform(-2.4, 2.4, n)
    for pid, charge, expected, kind in ((11, -1, 0.8, ELECTRON), (13, -1, 0.6, MUON),
                                        (22, 0, 0.9, PHOTON)):
        cand = det.simulate(gun(pid, charge, pt, eta), keys(n, f"id{pid}"))
        # the tracks of the leptons (found ~90 %), the ECAL candidates of the photons
        main = cand.columns["kind"][(cand.columns["charge"] != 0) == bool(charge)]
        frac = np.mean(main == kind)
        assert abs(frac - expected) < 4 * np.sqrt(expected * (1 - expected) / len(main)), pid
        other = CHARGED_HADRON if charge else NEUTRAL_HADRON
        assert set(np.unique(main)) == {kind, other}


# ------------------------------------------------------------------ particle flow


def test_particle_flow_makes_one_candidate_per_isolated_particle():
    """An isolated charged pion is one track (its HCAL deposit subtracted); with tracking
    switched off it is a neutral hadron of the HCAL's energy; a photon is a photon; a
    muon is a track and nothing else; a neutrino is nothing."""
    det = cms()
    n = 2000
    rng = np.random.default_rng(8)
    pt, eta = rng.uniform(10, 50, n), rng.uniform(-2.0, 2.0, n)
    cand = det.simulate(gun(211, 1, pt, eta), keys(n))
    kinds = cand.columns["kind"]
    # An upward fluctuation of the HCAL cell (more than 1 sigma beyond the track: JetClass's
    # significance_min) leaves a neutral excess next to the track; at 2 sigma ([CMS]) rarely.
    assert np.mean(cand.counts == 1) > 0.8
    assert set(np.unique(kinds)) == {CHARGED_HADRON, NEUTRAL_HADRON}
    strict = cms(calorimeter={"hcal": {"significance_min": 2.0}}).simulate(
        gun(211, 1, pt, eta), keys(n))
    assert np.mean(strict.counts == 1) > 0.95
    blind = cms(tracking={"efficiency_scale": 0.0})
    cand = blind.simulate(gun(211, 1, pt, eta), keys(n))
    assert (cand.columns["kind"] == NEUTRAL_HADRON).all() and (cand.counts == 1).all()
    cand = det.simulate(gun(13, -1, pt, eta, mass=0.1057), keys(n))
    assert set(np.unique(cand.columns["kind"])) == {MUON}
    cand = det.simulate(gun(14, 0, pt, eta, mass=0.0), keys(n))
    assert cand.offsets[-1] == 0


def test_long_lived_decays_are_seen_where_they_happen():
    """A charged particle made at 0.5 m is a (very displaced) track; at 1.5 m, inside the
    calorimeters, no track but a calorimeter deposit; at 4 m, nothing."""
    det = cms()
    n = 500
    pt, eta, phi = np.full(n, 20.0), np.full(n, 0.3), np.full(n, 0.7)
    for radius, expect in ((500.0, CHARGED_HADRON), (1500.0, NEUTRAL_HADRON), (4000.0, None)):
        vertex = (np.full(n, radius * np.cos(0.7)), np.full(n, radius * np.sin(0.7)),
                  np.full(n, radius * np.sinh(0.3)))
        cand = det.simulate(gun(211, 1, pt, eta, phi=phi, vertex=vertex), keys(n))
        kinds = cand.columns["kind"]
        if expect is None:
            assert len(kinds) == 0
            continue
        assert np.mean(kinds == expect) > 0.8, radius
        if expect == CHARGED_HADRON:
            assert np.median(np.abs(cand.columns["d0"][kinds == expect])) < 50  # pointing
        else:
            c = cand.columns
            pos_eta = np.arcsinh(c["pz"] / np.hypot(c["px"], c["py"]))
            assert np.allclose(pos_eta, 0.3, atol=0.1)  # the cell where it was made


def test_pileup_passes_through_with_its_own_vertices():
    """Extra particles of another collision (``origin`` 1, vertex 40 mm along z) in the
    same realizations: their tracks carry their origin and dz, and the signal's do not
    change their association."""
    det = cms()
    n = 3000
    rng = np.random.default_rng(9)
    pt, eta = rng.uniform(2, 20, 2 * n), rng.uniform(-2, 2, 2 * n)
    z = np.where(np.arange(2 * n) % 2 == 1, 40.0, 0.0)  # pairs: signal, pileup
    particles = gun(211, 1, pt, eta, vertex=(np.zeros(2 * n), np.zeros(2 * n), z),
                    per_event=2)
    particles.columns["origin"] = (np.arange(2 * n) % 2).astype(np.int16)
    cand = det.simulate(particles, keys(n))
    c = cand.columns
    assert set(c) == {*CANDIDATE_COLUMNS, "origin"}
    tracks = c["charge"] != 0
    pu = tracks & (c["origin"] == 1)
    assert np.allclose(c["dz"][pu], 40.0, atol=5 * c["dz_err"][pu].max())
    assert np.allclose(c["dz"][tracks & (c["origin"] == 0)], 0.0,
                       atol=5 * c["dz_err"][tracks].max())


def test_a_realization_does_not_depend_on_the_others_it_is_simulated_with():
    det = cms()
    n = 400
    rng = np.random.default_rng(10)
    particles = gun(211, 1, rng.uniform(1, 50, 4 * n), rng.uniform(-2.5, 2.5, 4 * n),
                    per_event=4)
    k = keys(n)
    everything = det.simulate(particles, k)
    some = np.array([3, 250, 17])
    alone = det.simulate(particles.take(some), k[some])
    expected = everything.take(some)
    for name in CANDIDATE_COLUMNS:
        assert np.array_equal(alone.columns[name], expected.columns[name]), name


def test_scale_factors_change_what_they_should():
    n = 20_000
    rng = np.random.default_rng(11)
    pt, eta = rng.uniform(2, 50, n), rng.uniform(-1.4, 1.4, n)
    particles = gun(211, 1, pt, eta)
    base = cms().simulate(particles, keys(n))
    worse = cms(tracking={"resolution_scale": 1.2, "efficiency_scale": 0.95}).simulate(
        particles, keys(n))
    n_base = np.sum(base.columns["charge"] != 0)
    n_worse = np.sum(worse.columns["charge"] != 0)
    assert abs(n_worse / n_base - 0.95) < 0.01

    def spread(c):
        t = c.columns["charge"] != 0
        return np.std(np.hypot(c.columns["px"], c.columns["py"])[t] / pt[c.event_index()[t]])

    assert 1.12 < spread(worse) / spread(base) < 1.28


# ------------------------------------------------------------------------ cards


def card_with(**detector_and_variations) -> dict:
    raw = tomllib.loads((CARDS / "top_small.toml").read_text())
    raw.update(detector_and_variations)
    return raw


def test_card_detector_section_and_its_errors(tmp_path):
    raw = card_with(detector={"preset": "cms", "calorimeter": {"hcal": {"significance_min": 2.0}}})
    raw["variations"]["smear"] = {"stage": "detector", "realizations": 3,
                                  "detector": {"tracking": {"resolution_scale": 1.2}}}
    card = parse_card(raw, tmp_path / "c.toml")
    smear = card.variations[-1]
    assert card.detector.hcal.significance_min == 2.0
    assert smear.base == "nominal" and smear.detector.tracking.resolution_scale == 1.2
    assert smear.detector.hcal.significance_min == 2.0  # the card's, under the override
    assert card.variations[0].detector is card.detector
    summary = card.summary()
    assert summary["stages"]["smear"] == "detector"
    assert summary["detector"]["smear"]["tracking"]["resolution_scale"] == 1.2

    def error(raw) -> str:
        with pytest.raises(CardError) as err:
            parse_card(raw, tmp_path / "c.toml")
        return str(err.value)

    bad = card_with(detector={"preset": "atlas"})
    assert "detector.preset: must be one of cms" in error(bad)
    bad = card_with(detector={"preset": "cms", "tracking": {"resolution_scale": -1}})
    assert "detector.tracking.resolution_scale: must be >= 0.0" in error(bad)
    bad = card_with(detector={"preset": "cms", "tracking": {"typo": 1}})
    assert "detector.tracking.typo: unknown key" in error(bad)
    bad = card_with(detector={"preset": "cms", "tracking": {
        "d0_resolution": {"values": [[0.1]]}}})
    assert "detector.tracking.d0_resolution.values: must be 3 lists of 34 numbers" in error(bad)
    bad = card_with(detector={"preset": "cms"})
    bad["variations"]["smear"] = {"stage": "detector", "detector": {"calorimeter": {
        "ecal": {"energy_scale": 0}}}}
    assert "variations.smear.detector.calorimeter.ecal.energy_scale: must be > 0.0" in error(bad)
    bad["variations"]["smear"] = {"stage": "detector", "base": "nope"}
    assert "variations.smear.base: must name a variation Pythia makes" in error(bad)
    bad["variations"]["smear"] = {"stage": "detector",
                                  "settings": {"TimeShower:renormMultFac": 0.5}}
    assert "re-runs only the detector" in error(bad)
    bad = card_with()
    bad["variations"]["smear"] = {"stage": "detector"}
    assert "variations.smear.stage: needs the card's [detector] section" in error(bad)


def test_every_preset_key_is_documented():
    assert not undocumented_keys(preset_text("cms"))


# ---------------------------------------------------------------- data sets


def test_detector_stage_realizations_share_particles_and_differ_in_the_detector(
        generate_card):
    path = generate_card("detector", events=6)
    ds = resim.open(path)
    jets = ds[:]
    assert set(ds.variations) == {"nominal", "fsr_up", "redetect", "worse"}
    assert set(jets.level.tolist()) == {"particle", "detector"}
    for field in ("d0", "dz", "d0_err", "dz_err", "kind"):
        assert field in jets.constituents.fields
    groups = ak.to_numpy(jets.group)
    tested = 0
    for g in np.unique(groups):
        j = jets[groups == g]
        redetect = j[j.variation == "redetect"]
        part = redetect[redetect.level == "particle"]
        det = redetect[redetect.level == "detector"]
        nominal = j[(j.variation == "nominal") & (j.level == "particle")]
        if len(part) < 2 or len(det) < 2 or len(nominal) != 1:
            continue
        tested += 1
        # identical particle level: the same constituents as each other and as nominal
        for a in part:
            assert ak.to_list(a.constituents) == ak.to_list(nominal[0].constituents)
        # different detector responses
        masses = ak.to_numpy(det.mass)
        assert len(np.unique(masses)) == len(masses)
        assert ak.to_list(det[0].constituents) != ak.to_list(det[1].constituents)
    assert tested >= 3
    # detector-level constituents: tracks have uncertainties, calorimeter candidates none
    c = ak.flatten(jets[jets.level == "detector"].constituents)
    charged = ak.to_numpy(c.charge) != 0
    assert (ak.to_numpy(c.d0_err)[charged] > 0).all()
    assert (ak.to_numpy(c.d0_err)[~charged] == 0).all()
    assert set(np.unique(ak.to_numpy(c.kind))) <= set(range(len(KINDS)))
    from resim.summary import describe

    assert set(describe(ds)["per_level"]) == {"particle", "detector"}  # resim inspect


def test_one_event_with_a_detector_regenerates_alone(generate_card):
    from resim.generate import Pipeline
    from resim.layout import TABLES

    path = generate_card("detector", events=5)
    ds = resim.open(path)
    tables, _ = Pipeline(load_card(CARDS / "detector.toml")).block(3, 4)
    jets_event = ds.column("jets", "event")
    sel = np.flatnonzero(jets_event == 3)
    assert len(sel) > 0
    for name in TABLES["jets"]:
        assert np.array_equal(tables["jets"][name], ds.column("jets", name)[sel]), name
    lo, hi = ds._offsets[sel[0]], ds._offsets[sel[-1] + 1]
    for name in TABLES["constituents"]:
        assert np.array_equal(tables["constituents"][name],
                              ds.column("constituents", name, lo, hi)), name


def test_format_version_1_files_still_open(tmp_path):
    from resim.store import merge

    merged = tmp_path / "merged.h5"  # resim merge writes them in the current format
    merge(DATA / "format1.h5", merged)
    new, old = resim.open(merged), resim.open(DATA / "format1.h5")
    assert new.attrs["format_version"] == FORMAT_VERSION and new.variations == old.variations
    for name in ("kind", "d0", "px"):
        assert np.array_equal(new.column("constituents", name),
                              old.column("constituents", name)), name
    ds = resim.open(DATA / "format1.h5")
    assert ds.attrs["format_version"] == 1
    jets = ds[:]
    assert len(jets) == 8 and set(jets.level.tolist()) == {"particle"}
    c = jets.constituents
    flat = ak.flatten(c)
    d0, dz = impact_parameters(*(ak.to_numpy(flat[k]).astype(np.float64)
                                 for k in ("px", "py", "pz", "vx", "vy", "vz")))
    charged = ak.to_numpy(flat.charge) != 0
    assert np.allclose(ak.to_numpy(flat.d0), np.where(charged, d0, 0), atol=1e-5)
    assert np.allclose(ak.to_numpy(flat.dz), np.where(charged, dz, 0), atol=1e-4)
    assert (ak.to_numpy(flat.d0_err) == 0).all()
    assert np.array_equal(ds.column("constituents", "kind", 0, 10), ak.to_numpy(flat.kind)[:10])
    assert (ds.column("jets", "level") == 0).all()


@pytest.mark.slow
def test_detector_level_top_mass_peak_and_width(generate_card):
    """Top jets: the detector-level mass peak stays at the top mass and is wider."""
    from scipy.stats import gaussian_kde

    path = generate_card("detector_top")
    jets = resim.open(path)[:]

    def peak_and_width(level):
        m = ak.to_numpy(jets.mass[jets.level == level])
        grid = np.linspace(50, 300, 1001)
        peak = grid[np.argmax(gaussian_kde(m)(grid))]
        window = m[np.abs(m - peak) < 40]
        return peak, np.std(window), len(m)

    p_peak, p_width, n_p = peak_and_width("particle")
    d_peak, d_width, n_d = peak_and_width("detector")
    assert n_p > 400 and n_d > 400
    assert 160 < p_peak < 185 and 160 < d_peak < 185
    assert d_width > p_width


"""Encoder inputs: padding, particle types, impact parameters and features by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

import resim
from resim.generators.propagation import impact_parameters
from resim.train.features import (
    CHARGED_HADRON,
    ELECTRON,
    FEATURES,
    MUON,
    NEUTRAL_HADRON,
    PHOTON,
    Particles,
    features,
    particle_kind,
)

F = {name: i for i, name in enumerate(FEATURES)}


def flat(rows: list[tuple]) -> dict[str, np.ndarray]:
    names = ("px", "py", "pz", "E", "pid", "charge", "vx", "vy", "vz")
    return {n: np.array(c) for n, c in zip(names, zip(*rows, strict=True), strict=True)}


def test_particle_kinds():
    pid = np.array([211, -211, 130, 22, 11, -13, 2112, 321, -11])
    charge = np.array([1, -1, 0, 0, -1, 1, 0, 1, 1])
    assert particle_kind(pid, charge).tolist() == [
        CHARGED_HADRON, CHARGED_HADRON, NEUTRAL_HADRON, PHOTON, ELECTRON, MUON,
        NEUTRAL_HADRON, CHARGED_HADRON, ELECTRON]


def test_straight_line_impact_parameters():
    # Born 1 mm off the beam along x, flying along +y: passes the beam line at 1 mm.
    d0, dz = impact_parameters(*map(np.array, ([0.0], [5.0], [0.0], [1.0], [0.0], [3.0])))
    assert d0[0] == pytest.approx(1.0) and dz[0] == pytest.approx(3.0)
    # Born at (1, 0, 2) mm flying radially outwards with pz = px: it came from (0, 0, 1).
    d0, dz = impact_parameters(*map(np.array, ([4.0], [0.0], [4.0], [1.0], [0.0], [2.0])))
    assert d0[0] == pytest.approx(0.0) and dz[0] == pytest.approx(1.0)
    # The sign flips with the side the track passes the beam on.
    d0, _ = impact_parameters(*map(np.array, ([0.0], [-5.0], [0.0], [1.0], [0.0], [0.0])))
    assert d0[0] == pytest.approx(-1.0)


def test_padding_keeps_the_first_particles_of_each_jet_in_order():
    counts = np.array([3, 0, 5])
    n = counts.sum()
    cols = {c: np.arange(n, dtype=float) + 1 for c in ("px", "py", "pz", "E",
                                                        "vx", "vy", "vz")}
    cols["pid"] = np.full(n, 211)
    cols["charge"] = np.ones(n)
    p = Particles.from_flat(cols, counts, max_particles=4)
    assert p.mask.tolist() == [[1, 1, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]]
    assert p.px.tolist() == [[1, 2, 3, 0], [0, 0, 0, 0], [4, 5, 6, 7]]
    assert p.take(np.array([2])).px.tolist() == [[4, 5, 6, 7]]
    assert len(Particles.concatenate([p, p])) == 6
    with pytest.raises(ValueError, match="max_particles"):
        Particles.from_flat(cols, counts, max_particles=0)


def test_features_of_a_two_particle_jet_by_hand():
    # A charged pion along x at eta 0 and a photon at (eta 0.5, phi 0.3); the pion is
    # born displaced (0, 0.2, 1) mm.
    pt2, eta2, phi2 = 50.0, 0.5, 0.3
    photon = (pt2 * math.cos(phi2), pt2 * math.sin(phi2), pt2 * math.sinh(eta2),
              pt2 * math.cosh(eta2), 22, 0, 0.0, 0.0, 0.0)
    pion = (100.0, 0.0, 0.0, math.hypot(100.0, 0.13957), 211, 1, 0.0, 0.2, 1.0)
    p = Particles.from_flat(flat([pion, photon]), np.array([2]), max_particles=3)
    x, v = features(p)
    assert x.shape == (1, 3, len(FEATURES)) and v.shape == (1, 3, 4)
    jet = p.jet_p4()[0]
    jet_pt = math.hypot(jet[0], jet[1])
    jet_eta = math.asinh(jet[2] / jet_pt)
    jet_phi = math.atan2(jet[1], jet[0])
    pi, ph = x[0, 0], x[0, 1]
    assert pi[F["deta"]] == pytest.approx(-jet_eta, abs=1e-5)
    assert ph[F["dphi"]] == pytest.approx(phi2 - jet_phi, abs=1e-5)
    assert ph[F["delta_r"]] == pytest.approx(math.hypot(eta2 - jet_eta, phi2 - jet_phi), abs=1e-5)
    assert pi[F["log_pt"]] == pytest.approx(math.log(100.0), rel=1e-6)
    assert ph[F["log_e"]] == pytest.approx(math.log(pt2 * math.cosh(eta2)), rel=1e-6)
    assert pi[F["log_pt_rel"]] == pytest.approx(math.log(100.0 / jet_pt), abs=1e-5)
    assert ph[F["log_e_rel"]] == pytest.approx(math.log(photon[3] / jet[3]), abs=1e-5)
    assert (pi[F["charge"]], ph[F["charge"]]) == (1.0, 0.0)
    assert pi[F["is_charged_hadron"]] == 1 and ph[F["is_photon"]] == 1
    assert pi[[F[f"is_{k}"] for k in ("neutral_hadron", "photon", "electron", "muon")]].sum() == 0
    # d0 = (vx py - vy px) / pT = -0.2 mm; dz = vz - (vx px + vy py) pz / pT² = 1 mm.
    assert pi[F["tanh_d0"]] == pytest.approx(math.tanh(-0.2), abs=1e-6)
    assert pi[F["tanh_dz"]] == pytest.approx(math.tanh(1.0), abs=1e-6)
    assert ph[F["tanh_d0"]] == 0 and ph[F["tanh_dz"]] == 0  # neutral: no track
    assert not x[0, 2].any() and not v[0, 2].any()  # padding is zero
    assert v[0, 1].tolist() == pytest.approx(photon[:4], rel=1e-6)


def test_deta_is_mirrored_for_backward_jets():
    particles = [(10.0, 0.0, 10.0 * math.sinh(e), 10.0 * math.cosh(e), 211, 1, 0, 0, 0)
                 for e in (1.0, 1.4)]
    forward = features(Particles.from_flat(flat(particles), np.array([2]), 2))[0]
    mirrored = [(px, py, -pz, e, *rest) for px, py, pz, e, *rest in particles]
    backward = features(Particles.from_flat(flat(mirrored), np.array([2]), 2))[0]
    np.testing.assert_allclose(forward, backward, atol=1e-6)


def test_features_of_generated_top_jets(top_dataset):
    jets = resim.open(top_dataset)[:]
    p = Particles.from_awkward(jets.constituents, max_particles=128)
    x, v = features(p)
    assert np.isfinite(x).all() and np.isfinite(v).all()
    real = p.mask
    n = np.minimum(np.asarray(jets.n_constituents), 128)
    assert (real.sum(1) == n).all()
    # Anti-kt R = 0.8 jets cluster within R in rapidity; pseudorapidity (the feature)
    # differs from it only for soft massive hadrons. No constituent is harder than the
    # jet; the jet axis is the stored jet (up to constituents beyond 128).
    hard = real & (x[..., F["log_pt"]] > 0)  # pT > 1 GeV
    assert np.percentile(x[..., F["delta_r"]][hard], 99.9) < 0.85
    assert np.percentile(x[..., F["delta_r"]][real], 99) < 0.9
    assert (x[..., F["log_pt_rel"]][real] <= 1e-5).all()
    jet_pt = np.hypot(*p.jet_p4()[:, :2].T)
    full = np.asarray(jets.n_constituents) <= 128
    np.testing.assert_allclose(jet_pt[full], np.asarray(jets.pt)[full], rtol=1e-3)
    # b and c hadron decays displace some charged tracks; neutral particles have none.
    d0 = x[..., F["tanh_d0"]]
    charged = x[..., F["charge"]] != 0
    assert (np.abs(d0[charged & real]) > 0.01).mean() > 0.01
    assert (d0[~charged] == 0).all()
    # Top jets are mostly charged hadrons and photons (from pi0 decays).
    kinds = x[..., F["is_charged_hadron"]:F["is_muon"] + 1][real].sum(0) / real.sum()
    assert kinds[0] > 0.4 and kinds[2] > 0.2

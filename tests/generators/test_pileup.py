"""Pileup: the overlay (Poisson multiplicity, luminous region, rotations, counter-based
draws), the vertex association and PUPPI against a plain re-implementation, the card
section, and the data sets it makes (pileup-stage groups, mitigation at work)."""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats

import resim
from resim.card import CardError, load_card, parse_card
from resim.cli import main
from resim.detector_spec import merge
from resim.generators.final_state import COLUMNS, FinalState
from resim.generators.mitigation import PILEUP, PRIMARY, associate, mitigate, puppi_weights
from resim.generators.pileup import overlay, poisson
from resim.generators.seeds import derive_key
from resim.layout import ELECTRON, MUON, NEUTRAL_HADRON, TABLES
from resim.pileup_spec import parse, preset_text

from .documented import undocumented_keys

CARDS = Path(__file__).parents[1] / "cards"


def spec(**overrides):
    """The jetclass2 preset with some keys overridden (nested dicts, as in a card)."""
    from resim.card import _Table

    raw = merge(tomllib.loads(preset_text("jetclass2")), overrides)
    raw["preset"] = "jetclass2"
    return parse(_Table("test", raw, "pileup."))


def keys(n: int, salt: str = "test") -> np.ndarray:
    return np.array([derive_key(5, salt, i) for i in range(n)], np.uint64)


def fake_library(n_events: int = 40, seed: int = 3) -> FinalState:
    """Minimum-bias-like events: a few soft pions each, from the origin or displaced."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 6, n_events)
    n = counts.sum()
    pt, eta, phi = rng.exponential(0.5, n) + 0.1, rng.uniform(-4, 4, n), rng.uniform(-3, 3, n)
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    columns = {"px": px, "py": py, "pz": pz, "E": np.sqrt(px**2 + py**2 + pz**2 + 0.0195),
               "pid": np.full(n, 211, np.int32), "charge": np.ones(n, np.int8),
               "vx": rng.normal(0, 0.5, n) * (rng.random(n) < 0.2), "vy": np.zeros(n),
               "vz": np.zeros(n)}
    return FinalState({k: v.astype(np.float32) if v.dtype == float else v
                       for k, v in columns.items()},
                      np.concatenate([[0], np.cumsum(counts)]))


def empty_signal(n: int) -> FinalState:
    return FinalState({c: np.zeros(0) for c in COLUMNS}, np.zeros(n + 1, np.int64))


# ------------------------------------------------------------------------- the overlay


@pytest.mark.parametrize("mu", [0.0, 2.5, 50.0, 140.0])
def test_pileup_multiplicity_is_poisson_with_the_configured_mean(mu):
    n = 5000
    out = overlay(empty_signal(n), fake_library(), keys(n, str(mu)), spec(mu=mu))
    counts = out.n_pileup
    if mu == 0:
        assert (counts == 0).all() and out.particles.offsets[-1] == 0
        return
    # mean within 4 standard errors; variance equal to the mean (Poisson); the shape
    assert abs(counts.mean() - mu) < 4 * math.sqrt(mu / n)
    assert abs(counts.var() / mu - 1) < 4 * math.sqrt(2 / n)
    k = np.arange(counts.max() + 1)
    expected = stats.poisson.pmf(k, mu) * n
    big = expected > 20
    chi2 = np.sum((np.bincount(counts, minlength=len(k))[big] - expected[big]) ** 2
                  / expected[big])
    assert stats.chi2.sf(chi2, big.sum() - 1) > 1e-3
    assert np.array_equal(poisson(np.array([1e-300, 1 - 1e-16]), mu) >= 0, [True, True])


def test_luminous_region_rotations_and_library_draws():
    """Pileup vertices relative to the primary one: Gaussian of width sqrt(2) z_width
    (both drawn from the luminous region); each collision is a library event rotated
    about the beam: pT, pz, E and the pT-ordered content kept, the azimuth uniform."""
    library = fake_library(n_events=40)
    n = 4000
    out = overlay(empty_signal(n), library, keys(n), spec(mu=3.0,
                                                          luminous_region={"z_width": 50.0}))
    z = out.vertex_z
    assert len(z) == out.n_pileup.sum()
    width, _ = stats.norm.fit(z)
    assert abs(np.std(z) / (50.0 * math.sqrt(2)) - 1) < 0.03 and abs(width) < 3
    p = out.particles.columns
    assert set(p) == {*COLUMNS, "pileup"} and (p["pileup"] == 1).all()
    # every collision's particles are one library event's, rotated
    pt = np.hypot(p["px"], p["py"])
    lib_pt = np.hypot(library.columns["px"], library.columns["py"]).astype(float)
    assert np.isin(np.round(pt, 4), np.round(lib_pt, 4)).all()
    assert np.isin(p["pz"], library.columns["pz"]).all()
    assert stats.kstest((np.arctan2(p["py"], p["px"]) + np.pi) / (2 * np.pi),
                        "uniform").pvalue > 1e-3
    # production vertices follow the rotation and the shift along z
    r = np.hypot(p["vx"], p["vy"])
    assert np.isin(np.round(r, 4), np.round(np.abs(library.columns["vx"]).astype(float), 4)).all()
    # the library is drawn uniformly
    draws = np.round(np.sort(np.unique(np.round(pt, 5))), 5)
    assert len(draws) > 0.9 * len(np.unique(np.round(lib_pt, 5)))


def test_overlay_keeps_the_signal_first_and_depends_only_on_each_key():
    rng = np.random.default_rng(1)
    counts = rng.integers(0, 5, 30)
    n = counts.sum()
    signal = FinalState({c: rng.normal(size=n) for c in COLUMNS},
                        np.concatenate([[0], np.cumsum(counts)]))
    k = keys(30)
    every = overlay(signal, fake_library(), k, spec(mu=4.0))
    for i in range(30):  # each realization: its signal rows unchanged, then pileup
        rows = slice(every.particles.offsets[i], every.particles.offsets[i + 1])
        own = slice(signal.offsets[i], signal.offsets[i + 1])
        assert np.array_equal(every.particles.columns["px"][rows][:counts[i]],
                              signal.columns["px"][own])
        assert (every.particles.columns["pileup"][rows][:counts[i]] == 0).all()
        assert (every.particles.columns["pileup"][rows][counts[i]:] == 1).all()
    some = np.array([17, 3, 3, 25])
    alone = overlay(signal.take(some), fake_library(), k[some], spec(mu=4.0))
    expected = every.particles.take(some)
    for name in (*COLUMNS, "pileup"):
        assert np.array_equal(alone.particles.columns[name], expected.columns[name]), name
    assert np.array_equal(alone.n_pileup, every.n_pileup[some])


# -------------------------------------------------------------------------- mitigation


def candidates(rows: list[dict], per_event: list[int]) -> FinalState:
    """Candidates from (pt, eta, phi, charge, kind, dz, dz_err, d0, d0_err, pileup) rows."""
    get = {k: np.array([r.get(k, 0.0) for r in rows], float) for k in (
        "pt", "eta", "phi", "charge", "dz", "dz_err", "d0", "d0_err", "pileup")}
    kind = np.array([r.get("kind", 0 if r.get("charge", 0) else NEUTRAL_HADRON)
                     for r in rows], np.int8)
    pt, eta, phi = get["pt"], get["eta"], get["phi"]
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    zero = np.zeros(len(rows))
    columns = {"px": px, "py": py, "pz": pz, "E": np.sqrt(px**2 + py**2 + pz**2),
               "pid": np.where(get["charge"] != 0, 211, 130).astype(np.int32),
               "charge": get["charge"].astype(np.int8), "vx": zero, "vy": zero, "vz": zero,
               "d0": get["d0"], "dz": get["dz"], "d0_err": np.where(get["charge"] != 0,
                                                                    get["d0_err"] + 0.01, 0),
               "dz_err": get["dz_err"], "kind": kind, "pileup": get["pileup"].astype(np.int8)}
    return FinalState(columns, np.concatenate([[0], np.cumsum(per_event)]))


def test_tracks_belong_to_the_primary_vertex_if_in_its_fit_else_to_pileup():
    s = spec()  # dz_significance 3, d0_significance 4, dz_max 3 mm
    t = dict(pt=5.0, charge=1, dz_err=0.1)
    rows = [
        {**t, "dz": 0.25},                  # in the primary vertex's fit
        {**t, "dz": 0.25, "dz_err": 0.05},  # not: at 5 sigma; a pileup vertex at 0.3 has it
        {**t, "dz": 10.2},                  # in the pileup vertex's fit at 10.0
        {**t, "dz": 6.0},                   # in no fit, nearer to pileup (10.0 and 0.3 ...)
        {**t, "dz": 2.0, "d0": 1.0},        # displaced (d0 at 100 sigma): no fit, |dz| < 3
        {**t, "dz": 0.28, "d0": 1.0},       # displaced, but nearest is pileup: |dz| < 3 wins
        {"pt": 5.0},                        # a neutral candidate: no vertex
        {**t, "dz": 6.0},                   # event 2 has no pileup: nearest is the primary
    ]
    c = candidates(rows, [7, 1])
    vertex = associate(c, np.array([0.3, 10.0, -40.0]), np.array([3, 0]), s)
    assert vertex.tolist() == [PRIMARY, PILEUP, PILEUP, PILEUP, PRIMARY, PRIMARY, -1, PRIMARY]
    chs = mitigate(c, np.array([0.3, 10.0, -40.0]), np.array([3, 0]), spec(mitigation="chs"))
    assert chs.counts.tolist() == [4, 1] and (chs.columns["weight"] == 1).all()
    assert (chs.columns["vertex"][chs.columns["charge"] != 0] == PRIMARY).all()
    none = mitigate(c, np.array([0.3, 10.0, -40.0]), np.array([3, 0]), spec(mitigation="none"))
    assert np.array_equal(none.columns["px"], c.columns["px"])
    assert none.columns["vertex"].tolist() == vertex.tolist()


def reference_puppi(c: FinalState, vertex: np.ndarray, n_pileup: np.ndarray, s) -> np.ndarray:
    """PUPPI as the module docstring says, particle by particle, in plain Python."""
    cols = c.columns
    weights = np.ones(len(vertex))
    for e in range(len(c)):
        rows = range(c.offsets[e], c.offsets[e + 1])
        pt = {i: math.hypot(cols["px"][i], cols["py"][i]) for i in rows}
        eta = {i: math.asinh(cols["pz"][i] / pt[i]) for i in rows}
        phi = {i: math.atan2(cols["py"][i], cols["px"][i]) for i in rows}
        region = {i: next((r for r in range(len(s.cone))
                           if s.eta_edges[r] <= abs(eta[i]) < s.eta_edges[r + 1]), -1)
                  for i in rows}
        charged = {i: cols["charge"][i] != 0 for i in rows}
        lepton = {i: cols["kind"][i] in (ELECTRON, MUON) for i in rows}
        pv = [j for j in rows if charged[j] and not lepton[j] and vertex[j] == PRIMARY]
        alpha = {}
        for i in rows:
            total = 0.0
            for j in pv:
                dphi = abs(phi[i] - phi[j])
                dphi = min(dphi, 2 * math.pi - dphi)
                dr2 = (eta[i] - eta[j]) ** 2 + dphi**2
                if region[i] >= 0 and s.min_dr**2 <= dr2 < s.cone[region[i]] ** 2:
                    total += pt[j] ** 2 / dr2
            alpha[i] = math.log(total) if total > 0 else -math.inf

        n_pv = max(1.0, s.vertex_efficiency * (1 + n_pileup[e]))
        for r in range(len(s.cone)):
            mine = [i for i in rows if region[i] == r and not lepton[i]]
            calib = sorted(a for i in mine if charged[i] and vertex[i] == PILEUP
                           and pt[i] >= s.rms_pt_min[r] and math.isfinite(a := alpha[i]))
            if calib:
                med = calib[len(calib) // 2]
                below = [a for a in calib if a <= med or not s.low_pileup_correction[r]]
                rms = math.sqrt(sum((a - med) ** 2 for a in below) / len(below)) or 1e-5
                rms *= s.rms_scale[r]
                if s.low_pileup_correction[r]:
                    n_below = sum(1 for i in mine if charged[i] and vertex[i] == PRIMARY
                                  and pt[i] >= s.rms_pt_min[r] and not alpha[i] > med)
                    f = n_below / (n_below + 0.5 * len(calib))
                    if f > 0:
                        shift = math.sqrt(stats.chi2.ppf(min(f, 1 - 1e-16), 1) * rms)
                        med, rms = med - shift, rms - shift
            for i in mine:
                if charged[i]:
                    w = float(vertex[i] == PRIMARY)
                elif not calib:
                    w = 1.0
                else:
                    a = alpha[i] if math.isfinite(alpha[i]) else med
                    chi2 = (a - med) * abs(a - med) / max(rms * rms, 1e-10)
                    w = stats.chi2.cdf(chi2, 1) if chi2 > 0 else 0.0
                if w < s.weight_min:
                    w = 0.0
                if not charged[i] and w * pt[i] < (s.neutral_pt_min[r]
                                                   + s.neutral_pt_slope[r] * n_pv):
                    w = 0.0
                weights[i] = w
        for i in rows:
            if lepton[i]:
                weights[i] = float(vertex[i] == PRIMARY)
    return weights


def test_puppi_weights_equal_a_particle_by_particle_reference():
    """Three realizations of a jet of primary-vertex tracks and neutrals on a pileup
    background, vectorised PUPPI against the plain definition; and the physics: neutrals
    in the jet keep high weights, isolated pileup neutrals lose them."""
    rng = np.random.default_rng(4)
    rows, per_event = [], []
    for _ in range(3):
        n_jet, n_pu, n_fwd = 40, 150, 20
        jet = [dict(pt=rng.exponential(20) + 1, eta=0.5 + rng.normal(0, 0.15),
                    phi=1.0 + rng.normal(0, 0.15), charge=rng.choice([0, 1]), dz=0.0,
                    dz_err=0.05) for _ in range(n_jet)]
        pu = [dict(pt=rng.exponential(0.6) + 0.15, eta=rng.uniform(-2.5, 2.5),
                   phi=rng.uniform(-np.pi, np.pi), charge=rng.choice([0, 1, 1]),
                   dz=rng.choice([-20.0, 15.0, 40.0]), dz_err=0.3, pileup=1)
              for _ in range(n_pu)]
        fwd = [dict(pt=rng.exponential(2) + 0.1, eta=rng.uniform(2.6, 4.5),
                    phi=rng.uniform(-np.pi, np.pi), pileup=1) for _ in range(n_fwd)]
        lepton = [dict(pt=30.0, eta=0.6, phi=1.1, charge=1, dz=0.0, dz_err=0.05,
                       kind=ELECTRON)]
        rows += jet + pu + fwd + lepton
        per_event.append(n_jet + n_pu + n_fwd + 1)
    c = candidates(rows, per_event)
    n_pileup = np.array([50, 40, 60])
    vertex_z = np.tile([-20.0, 15.0, 40.0], 3)
    for s in (spec(puppi={"low_pileup_correction": [False, False],
                          "rms_scale": [1.5, 1.0]}), spec()):
        vertex = associate(c, vertex_z, np.array([3, 3, 3]), s)
        w = puppi_weights(c, vertex, n_pileup, s.puppi)
        assert np.allclose(w, reference_puppi(c, vertex, n_pileup, s.puppi), atol=1e-9)
    neutral = c.columns["charge"] == 0
    central = np.abs(np.arcsinh(c.columns["pz"] / np.hypot(c.columns["px"], c.columns["py"])))
    central = central < 2.5
    assert w[neutral & (c.columns["pileup"] == 0)].mean() > 0.9
    assert w[neutral & central & (c.columns["pileup"] == 1)].mean() < 0.1
    # beyond the tracker no pileup tracks calibrate: only the neutral pT cut acts
    assert set(np.unique(w[~central])) == {0.0, 1.0}
    assert (w[c.columns["kind"] == ELECTRON] == 1).all()


# ------------------------------------------------------------------------------ cards


def card_with(**sections) -> dict:
    raw = tomllib.loads((CARDS / "detector.toml").read_text())
    raw.update(sections)
    return raw


def test_card_pileup_section_and_its_errors(tmp_path):
    card = load_card(CARDS / "pileup.toml")
    assert card.pileup.mu == 50 and card.pileup.library.events == 500
    by_name = {v.name: v for v in card.variations}
    assert by_name["no_pileup"].pileup.mu == 0 and by_name["no_pileup"].base == "nominal"
    assert by_name["unmitigated"].pileup.mitigation == "none"
    assert by_name["nominal"].pileup is card.pileup
    summary = card.summary()
    assert summary["pileup"]["no_pileup"]["mu"] == 0
    assert summary["pileup"]["nominal"]["library"]["settings"] == ["SoftQCD:inelastic = on"]
    assert summary["stages"]["redraw"] == "pileup"

    def error(raw) -> str:
        with pytest.raises(CardError) as err:
            parse_card(raw, tmp_path / "c.toml")
        return str(err.value)

    no_detector = card_with(pileup={"mu": 50})
    del no_detector["detector"]
    del no_detector["variations"]["redetect"], no_detector["variations"]["worse"]
    assert "pileup: pileup is seen only by a detector" in error(no_detector)
    assert "pileup.mu: must be >= 0.0" in error(card_with(pileup={"mu": -1}))
    assert "pileup.mitigation: must be one of puppi, chs, none" in error(
        card_with(pileup={"mitigation": "softkiller"}))
    assert "pileup.typo: unknown key" in error(card_with(pileup={"typo": 1}))
    assert "pileup.puppi.cone: must be a list of 2 numbers" in error(
        card_with(pileup={"puppi": {"cone": [0.4]}}))
    assert "pileup.preset: must be one of jetclass2" in error(card_with(pileup={"preset": "x"}))
    bad = card_with(pileup={"mu": 50})
    bad["variations"]["pu"] = {"stage": "pileup", "pileup": {"library": {"events": 10}}}
    assert "variations.pu.pileup.library: is the card's" in error(bad)
    bad["variations"]["pu"] = {"stage": "pileup", "pileup": {"mu": "many"}}
    assert "variations.pu.pileup.mu: must be a number" in error(bad)
    # a typo offers only what a variation may override (not the card's preset, library)
    bad["variations"]["pu"] = {"stage": "pileup", "pileup": {"mitgation": "chs"}}
    assert error(bad).endswith("variations.pu.pileup.mitgation: unknown key (allowed here: "
                               "mu, mitigation, luminous_region, chs, puppi)")
    bad["variations"]["pu"] = {"stage": "pileup", "settings": {"PhaseSpace:pTHatMin": 1.0}}
    assert "re-runs only the pileup" in error(bad)
    bad = card_with()
    bad["variations"]["pu"] = {"stage": "pileup"}
    assert "variations.pu.stage: needs the card's [pileup] section" in error(bad)


def test_every_pileup_preset_key_is_documented():
    assert not undocumented_keys(preset_text("jetclass2"))


# -------------------------------------------------------------------------- data sets


def detector_jets(ds: resim.JetDataset, variation: str) -> ak.Array:
    jets = ds[:]
    return jets[(jets.level == "detector") & (jets.variation == variation)]


def constituents(jets: ak.Array) -> dict[str, np.ndarray]:
    flat = ak.flatten(jets.constituents)
    return {f: ak.to_numpy(flat[f]) for f in flat.fields}


def test_pileup_stage_realizations_share_particles_and_differ_in_pileup(pileup_dataset):
    ds = resim.open(pileup_dataset)
    jets = ds[:]
    groups = ak.to_numpy(jets.group)
    tested = 0
    for g in np.unique(groups):
        j = jets[groups == g]
        part = j[j.level == "particle"]
        det = j[(j.level == "detector") & (j.variation == "redraw")]
        if len(part) != len(ds.variations) + 1 or len(det) < 2:
            continue  # every realization's particle-level jet passed the cuts
        tested += 1
        # identical particle level: every pileup-stage realization is nominal's event
        for a in part[1:]:
            assert ak.to_list(a.constituents) == ak.to_list(part[0].constituents)
        # and particle-level jets are pileup-free
        assert ak.all(ak.flatten(part.constituents.pileup) == 0)
        assert ak.all(part.n_pileup == 0)
        # two draws of pileup: different detector-level jets
        assert ak.to_list(det[0].constituents) != ak.to_list(det[1].constituents)
        assert det[0].n_pileup != det[1].n_pileup or det[0].mass != det[1].mass
    assert tested >= 3


def test_mu_is_a_variation_setting(pileup_dataset):
    """Variations at <mu> = 0, 50 and 140 on the same particles and detector seeds: each
    realization's number of collisions is Poisson with its variation's mean, and more of
    the PUPPI jets' pT comes from pileup at 140 than at 50 (measured: 10 % against 3 %)."""
    ds = resim.open(pileup_dataset)
    mu = {v: s["mu"] for v, s in ds.summary["pileup"].items()}
    assert (mu["no_pileup"], mu["nominal"], mu["pu140"]) == (0, 50, 140)
    share = {}
    for v in ("no_pileup", "nominal", "redraw", "pu140"):
        jets = detector_jets(ds, v)
        keys = zip(ak.to_list(jets.event), ak.to_list(jets.realization), strict=True)
        realizations = dict(zip(keys, ak.to_list(jets.n_pileup), strict=True))
        counts = np.array(list(realizations.values()))
        assert len(counts) >= 5
        assert abs(counts.mean() - mu[v]) <= 4 * math.sqrt(mu[v] / len(counts)), v
        c = constituents(jets)
        pt = np.hypot(c["px"], c["py"])
        share[v] = pt[c["pileup"] == 1].sum() / pt.sum()
    assert share["no_pileup"] == 0 < share["nominal"]
    assert share["pu140"] > 1.5 * max(share["nominal"], share["redraw"])


def test_inspect_shows_each_variations_stage_mu_and_mitigation(pileup_dataset):
    result = CliRunner().invoke(main, ["inspect", str(pileup_dataset)])
    assert result.exit_code == 0, result.output
    # a row per variation and level: only detector-level jets see pileup
    rows = {tuple(line.split()[:2]): line.split()[2:6] for line in result.output.splitlines()
            if line.split() and line.split()[0] in resim.open(pileup_dataset).variations}
    setups = {"nominal": ["shower", "mu", "50", "puppi"],
              "redraw": ["pileup", "mu", "50", "puppi"],
              "no_pileup": ["pileup", "mu", "0", "puppi"],
              "unmitigated": ["pileup", "mu", "50", "none"],
              "chs": ["pileup", "mu", "50", "chs"],
              "pu140": ["pileup", "mu", "140", "puppi"]}
    assert {v for v, _ in rows} == set(setups)
    for v, setup in setups.items():
        assert rows[v, "detector"] == setup
        assert rows[v, "particle"][:2] == [setup[0], "-"]
    d = json.loads(CliRunner().invoke(main, ["inspect", str(pileup_dataset), "--json"]).output)
    assert d["per_variation"]["pu140"]["pileup"] == {"mu": 140, "mitigation": "puppi"}
    assert d["per_variation"]["chs"]["stage"] == "pileup"
    # the totals mix the levels; per level, pileup raises only the detector-level mass
    levels = d["per_variation"]["unmitigated"]["per_level"]
    assert levels["particle"]["jets"] + levels["detector"]["jets"] == \
        d["per_variation"]["unmitigated"]["jets"]
    no_pileup = d["per_variation"]["no_pileup"]["per_level"]
    assert levels["particle"]["mean_mass"] == no_pileup["particle"]["mean_mass"]
    assert levels["detector"]["mean_mass"] > no_pileup["detector"]["mean_mass"] + 20


def test_stored_candidates_carry_their_vertex_weight_and_origin(pileup_dataset):
    ds = resim.open(pileup_dataset)
    assert ds.attrs["format_version"] == 3
    nominal = constituents(detector_jets(ds, "nominal"))
    charged = nominal["charge"] != 0
    # PUPPI: tracks of the primary vertex only, at weight 1; neutrals weighted (0, 1]
    assert (nominal["vertex"][charged] == PRIMARY).all()
    assert (nominal["weight"][charged] == 1).all()
    assert (nominal["vertex"][~charged] == -1).all()
    w = nominal["weight"][~charged]
    assert (w > 0).all() and (w <= 1).all() and (w < 1).mean() > 0.2
    assert 0 < nominal["pileup"].mean() < 0.3
    unmitigated = constituents(detector_jets(ds, "unmitigated"))
    assert (unmitigated["weight"] == 1).all()
    assert (unmitigated["vertex"] == PILEUP).sum() > 100
    # most pileup tracks are told apart; few hard-collision tracks are lost
    tracks = unmitigated["charge"] != 0
    from_pileup = unmitigated["pileup"] == 1
    assert (unmitigated["vertex"][tracks & from_pileup] == PILEUP).mean() > 0.97
    assert (unmitigated["vertex"][tracks & ~from_pileup] == PRIMARY).mean() > 0.9
    chs = constituents(detector_jets(ds, "chs"))
    assert (chs["vertex"][chs["charge"] != 0] == PRIMARY).all() and (chs["weight"] == 1).all()
    clean = constituents(detector_jets(ds, "no_pileup"))
    assert (clean["pileup"] == 0).all() and (clean["weight"] == 1).all()
    n_pileup = {v: ak.to_numpy(detector_jets(ds, v).n_pileup) for v in ds.variations}
    assert (n_pileup["no_pileup"] == 0).all() and n_pileup["nominal"].mean() > 30
    assert set(TABLES["constituents"]) <= set(ds[0].constituents.fields)


def test_detector_jets_with_pileup_carry_their_realizations_flavour(pileup_dataset):
    """Heavy-flavour hadrons and gluon splitting come from the realization's record,
    whatever pileup was overlaid: a detector-level jet agrees with its particle-level one."""
    jets = resim.open(pileup_dataset)[:]
    by_level = {}
    for level in ("particle", "detector"):
        j = jets[jets.level == level]
        keys = zip(*(ak.to_list(j[f]) for f in ("group", "variation", "realization")),
                   strict=True)
        by_level[level] = dict(zip(keys, zip(ak.to_list(j.n_b_hadrons),
                                             ak.to_list(j.splitting), strict=True),
                                   strict=True))
    both = by_level["particle"].keys() & by_level["detector"].keys()
    assert len(both) > 50
    same = [by_level["particle"][k] == by_level["detector"][k] for k in both]
    assert np.mean(same) > 0.9
    assert np.mean([by_level["detector"][k][0] >= 1 for k in both]) > 0.5  # tops hold a b


def test_one_event_with_pileup_regenerates_alone(pileup_dataset):
    """A fresh pipeline makes the library itself (the run read its file): the same rows."""
    from resim.generate import Pipeline

    from ..run.test_reproducibility import rows_of_event

    tables, _ = Pipeline(load_card(CARDS / "pileup.toml")).block(2, 3)
    stored = rows_of_event(resim.open(pileup_dataset), 2)
    assert len(stored["jets"]["pt"]) > 0
    for table, columns in stored.items():
        for name, values in columns.items():
            assert np.array_equal(tables[table][name], values), (table, name)


def test_files_without_pileup_columns_still_open(tmp_path, detector_datasets):
    """A format-2 file (before pileup): no n_pileup, no vertex/weight/pileup columns."""
    import h5py

    from resim.store import merge as merge_file

    old = tmp_path / "format2.h5"
    merge_file(detector_datasets[0], old)
    with h5py.File(old, "r+") as f:
        del f["jets/n_pileup"]
        for name in ("vertex", "weight", "pileup"):
            del f[f"constituents/{name}"]
        f.attrs["format_version"] = 2
    ds = resim.open(old)
    c = constituents(ds[:])
    assert (ds.column("jets", "n_pileup") == 0).all()
    assert (c["weight"] == 1).all() and (c["pileup"] == 0).all()
    assert np.array_equal(c["vertex"], np.where(c["charge"] != 0, 0, -1))
    assert np.array_equal(ds.column("constituents", "kind"), c["kind"])
    assert not np.array_equal(c["d0_err"], 0)  # stored detector-level columns kept
    from resim.train.data import JetData  # the trainer reads them too, stored columns kept

    data = JetData([old], level="detector")
    particles = data.particles(np.flatnonzero(ds.column("jets", "level") == 1)[:3], 16)
    assert particles.mask.any() and (particles.d0_err[particles.mask] > 0).any()


@pytest.mark.slow
def test_pileup_shifts_jets_up_and_mitigation_brings_them_back(generate_card):
    """Top jets at <mu> = 50, each against its own pileup-free realization (same particles,
    same detector seeds): without mitigation pT and mass rise by ~60 and ~50 GeV; with
    PUPPI the mean shifts stay within 4 % in pT and 15 GeV in mass (measured: +2 %,
    +8 GeV, at ~1.5 % and 1 GeV statistical errors), and below a quarter of the
    unmitigated ones; CHS alone lies in between."""
    ds = resim.open(generate_card("pileup", events=60))
    reference = detector_jets(ds, "no_pileup")
    pt_ref = dict(zip(ak.to_list(reference.group), ak.to_list(reference.pt), strict=True))
    m_ref = dict(zip(ak.to_list(reference.group), ak.to_list(reference.mass), strict=True))

    def shifts(variation):
        jets = detector_jets(ds, variation)
        pairs = [(pt / pt_ref[g] - 1, m - m_ref[g]) for g, pt, m in zip(
            ak.to_list(jets.group), ak.to_list(jets.pt), ak.to_list(jets.mass), strict=True)
            if g in pt_ref]
        assert len(pairs) > 80
        return np.mean(pairs, axis=0)

    raw_pt, raw_m = shifts("unmitigated")
    puppi_pt, puppi_m = shifts("nominal")
    _, chs_m = shifts("chs")
    assert raw_pt > 0.08 and raw_m > 30
    assert abs(puppi_pt) < 0.04 and abs(puppi_m) < 15
    assert abs(puppi_pt) < raw_pt / 4 and abs(puppi_m) < raw_m / 4
    assert puppi_m < chs_m < raw_m

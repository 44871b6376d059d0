"""Physics of the generated jets: peaks where physics puts them, FSR ordering, groups, and
re-simulation that reproduces plain Pythia generation (it must not bias physics)."""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import vector
from scipy.stats import ks_2samp

import resim
from resim.card import load_card
from resim.generators.final_state import FinalState, ParticleTable, visible_final_state
from resim.generators.hard_process import HardProcessSource, freeze
from resim.generators.pythia_setup import configure, initialize, new_pythia
from resim.jets import make_jets
from resim.truth import TruthObjects

from .peaks import peak

CARDS = Path(__file__).parents[1] / "cards"


def nominal(path: Path) -> ak.Array:
    jets = resim.open(path)[:]
    return jets[jets.variation == "nominal"]


@pytest.mark.slow
def test_top_and_w_jet_mass_peaks(generate_card):
    top = nominal(generate_card("top_small", events=400))
    w = nominal(generate_card("w_small"))
    assert len(top) > 200 and len(w) > 200
    assert 160 < peak(ak.to_numpy(top.mass), 50, 300) < 185
    assert 70 < peak(ak.to_numpy(w.mass), 20, 200) < 90


def test_groups_share_their_object_and_differ_between_seeds(top_dataset):
    ds = resim.open(top_dataset)
    jets = ds[:]
    groups = ds.table("groups")
    assert ak.sum(groups.n_jets) == len(jets)
    start = np.concatenate([[0], np.cumsum(ak.to_numpy(groups.n_jets))[:-1]])
    # Contiguous: the group column is constant over each group's run of rows.
    run = np.repeat(ak.to_numpy(groups.group), ak.to_numpy(groups.n_jets))
    assert np.array_equal(run, ak.to_numpy(jets.group))
    assert np.array_equal(np.repeat(ak.to_numpy(groups.event), ak.to_numpy(groups.n_jets)),
                          ak.to_numpy(jets.event))
    # Each jet lies within R of its group's truth top.
    truth = vector.array({"pt": np.repeat(ak.to_numpy(groups.pt), ak.to_numpy(groups.n_jets)),
                          "eta": np.repeat(ak.to_numpy(groups.eta), ak.to_numpy(groups.n_jets)),
                          "phi": np.repeat(ak.to_numpy(groups.phi), ak.to_numpy(groups.n_jets)),
                          "mass": np.repeat(ak.to_numpy(groups.mass), ak.to_numpy(groups.n_jets))})
    reco = vector.array({"pt": ak.to_numpy(jets.pt), "eta": ak.to_numpy(jets.eta),
                         "phi": ak.to_numpy(jets.phi), "mass": ak.to_numpy(jets.mass)})
    assert np.all(reco.deltaR(truth) < 0.8)
    assert np.all(np.abs(ak.to_numpy(groups.pid)) == 6)
    # Nominal and new-seed realizations of one top: same object, different constituents.
    differ = compared = 0
    for s, n in zip(start, ak.to_numpy(groups.n_jets), strict=True):
        g = jets[s:s + n]
        names = ak.to_list(g.variation)
        if "nominal" in names and "seed" in names:
            a, b = g[names.index("nominal")], g[names.index("seed")]
            compared += 1
            same = len(a.constituents) == len(b.constituents) and np.allclose(
                ak.to_numpy(a.constituents.px), ak.to_numpy(b.constituents.px))
            differ += not same
    assert compared > 20 and differ == compared


def test_fsr_up_gives_more_constituents_than_fsr_down(generate_card):
    jets = resim.open(generate_card("fsr_pair"))[:]
    up = jets[jets.variation == "fsr_up"]
    down = jets[jets.variation == "fsr_down"]
    # Paired by group: the same hard parton showered with mu_R/2 and 2 mu_R (jets are
    # ordered by group, one realization of each variation per group).
    common = np.intersect1d(ak.to_numpy(up.group), ak.to_numpy(down.group))
    n_up = ak.to_numpy(up.n_constituents)[np.isin(ak.to_numpy(up.group), common)]
    n_down = ak.to_numpy(down.n_constituents)[np.isin(ak.to_numpy(down.group), common)]
    diff = n_up.astype(float) - n_down
    assert len(diff) > 150
    assert diff.mean() > 3 * diff.std(ddof=1) / np.sqrt(len(diff)), diff.mean()


def plain_pythia_jets(card_path: Path, events: int, seed: int) -> ak.Array:
    """The same process made the ordinary way — one Pythia, full events — and clustered and
    matched exactly as resim does. Only the hand-over of the hard process differs."""
    card = load_card(card_path).with_overrides(events=events, seed=seed)
    pythia = new_pythia()
    # The upstream's settings without its "PartonLevel:all = off" / "HadronLevel:all = off".
    settings = [s for s in HardProcessSource._settings(card) if "Level:all" not in s.line]
    configure(pythia, settings, card.path)
    initialize(pythia, card.path, "", "plain Pythia")
    table = ParticleTable(pythia.particleData)
    batches, hard = [], []
    for i in range(events):
        pythia.rndm.init(1000 + i)
        batch = pythia.nextBatch(1, "skip")
        if len(batch):
            batches.append(batch)
            hard.append(freeze(pythia.process, pythia.infoPython(), len(hard)))
    particles = FinalState.concatenate([visible_final_state(b, table) for b in batches])
    jobs = {"event": np.arange(len(hard)), "variation": np.zeros(len(hard), np.int8),
            "realization": np.zeros(len(hard), np.int16), "seed": np.zeros(len(hard), np.int32)}
    truth = TruthObjects.of(hard, card.objects)
    return make_jets(particles, jobs, truth, card.jets, card.objects.contained).jets


@pytest.mark.slow
@pytest.mark.parametrize(("card", "events"), [("top_small", 400), ("qcd_small", 250)])
def test_resimulated_nominal_jets_match_plain_pythia(generate_card, card, events):
    path = CARDS / f"{card}.toml"
    made = generate_card(card, events=events)
    resim_jets = nominal(made)
    plain = plain_pythia_jets(path, events=events, seed=5)
    assert len(resim_jets) > 200 and len(plain["pt"]) > 200
    for name in ("mass", "n_constituents", "pt"):
        p = ks_2samp(ak.to_numpy(resim_jets[name]), plain[name]).pvalue
        assert p > 0.01, (card, name, p)
    # The comparison has the power to see a real change: FSR-up jets are not nominal ones.
    jets = resim.open(made)[:]
    fsr_up = ak.to_numpy(jets[jets.variation == "fsr_up"].n_constituents)
    assert ks_2samp(fsr_up, plain["n_constituents"]).pvalue < 0.01


@pytest.mark.slow
def test_hadronization_only_reruns_reproduce_nominal_physics_and_share_the_shower(generate_card):
    jets = resim.open(generate_card("rehadronize"))[:]
    full = jets[jets.variation == "nominal"]
    rehad = jets[jets.variation == "hadronization"]
    assert len(full) > 300 and len(rehad) > 300
    # Same settings, so the same distributions: re-hadronizing adds no bias.
    for name in ("mass", "n_constituents"):
        p = ks_2samp(ak.to_numpy(full[name]), ak.to_numpy(rehad[name])).pvalue
        assert p > 0.01, (name, p)

    def spread(sample: ak.Array) -> float:
        """Mean |m(r0) - m(r1)| over groups with both realizations."""
        r0, r1 = sample[sample.realization == 0], sample[sample.realization == 1]
        common = np.intersect1d(ak.to_numpy(r0.group), ak.to_numpy(r1.group))
        m0 = ak.to_numpy(r0.mass)[np.isin(ak.to_numpy(r0.group), common)]
        m1 = ak.to_numpy(r1.mass)[np.isin(ak.to_numpy(r1.group), common)]
        return float(np.mean(np.abs(m0 - m1)))

    # Hadronization-only realizations share one parton shower: they differ less.
    assert spread(rehad) < 0.8 * spread(full), (spread(rehad), spread(full))

"""Every JetClass and RS3L class from the shipped cards: H -> 4q, H -> l nu q q', t -> b l nu,
Z -> b bbar and QCD by flavour and gluon splitting. Mass peaks where physics puts them,
leptonic jets that hold their lepton, flavour labels with plausible fractions.

The physics tests run each shipped card as it ships, with its nominal variation only (and
the new-seed one where realizations must differ), on a few hundred hard events."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
from click.testing import CliRunner

import resim
from resim.card import CardError, load_card
from resim.cli import main
from resim.flavour import SPLITTINGS
from resim.generate import generate
from resim.generators.hard_process import OUTGOING, HardProcessSource

from .peaks import peak

NEW_CARDS = {"hqqqq": ("hqqqq",), "hlnuqq": ("hlnuqq",), "tbl": ("tbl",), "zbb": ("zbb",),
             "qcdflavour": ("light", "c", "b", "g")}


def test_resim_cards_lists_the_new_cards_with_their_labels():
    listing = CliRunner().invoke(main, ["cards"]).output
    for name, labels in NEW_CARDS.items():
        assert f"\n{name} " in f"\n{listing}", name
        card = load_card(name)
        assert card.labels == labels
        assert card.objects.contained == (name != "qcdflavour")
    # Both W of H -> W W* decay, one to l nu and one to q q', by Pythia's decay filter.
    filters = [s.line for s in load_card("hlnuqq").hard_process.settings
               if s.name.startswith("ResonanceDecayFilter:")]
    assert "ResonanceDecayFilter:daughters = 1,2,11,12" in filters


def test_the_decay_filter_belongs_to_the_hard_process(tmp_path: Path):
    text = load_card("hlnuqq").path.read_text().replace(
        'settings = { "Tune:pp" = 14 }', 'settings = { "Tune:pp" = 14, '
        '"ResonanceDecayFilter:filter" = true }', 1)
    card = tmp_path / "bad.toml"
    card.write_text(text)
    with pytest.raises(CardError, match=r'pythia\.settings\."ResonanceDecayFilter:filter": the '
                                        "resonance-decay filter acts on the hard process"):
        load_card(card)


def shipped(name: str, directory: Path, events: int, variations: tuple[str, ...] = ("nominal",)
            ) -> Path:
    """Generate shipped card ``name`` with only ``variations``; the data set's path."""
    card = load_card(name)
    card = dataclasses.replace(card, variations=tuple(v for v in card.variations
                                                      if v.name in variations))
    output = directory / f"{name}.h5"
    generate(card.with_overrides(events=events, output=output), progress=False)
    return output


@pytest.fixture(scope="module")
def nominal(tmp_path_factory: pytest.TempPathFactory):
    """``nominal(card, events)``: the card's nominal jets, made once per module."""
    made: dict[str, Path] = {}

    def make(name: str, events: int) -> Path:
        if name not in made:
            made[name] = shipped(name, tmp_path_factory.mktemp(name), events)
        return made[name]

    return make


EVENTS = {"hqqqq": 400, "zbb": 450, "hlnuqq": 700, "tbl": 700}


@pytest.mark.slow
@pytest.mark.parametrize(("card", "lo", "hi"), [
    ("hqqqq", 115, 135),   # all four quarks of the Higgs inside: its mass, 125 GeV
    ("zbb", 80, 100),      # both b quarks of the Z: 91 GeV (less the b decays' neutrinos)
    ("hlnuqq", 85, 120),   # the neutrino escapes: below 125 GeV
    ("tbl", 95, 145),      # b + lepton: below m(b l) <= sqrt(mt^2 - mW^2) = 153 GeV, mostly
])
def test_mass_peaks_of_the_new_classes(nominal, card, lo, hi):
    jets = resim.open(nominal(card, EVENTS[card]))[:]
    mass = ak.to_numpy(jets.mass)
    assert len(mass) > 120, len(mass)
    found = peak(mass, 20, 300)
    assert lo < found < hi, (card, found)
    if card == "hlnuqq":
        assert np.mean(mass < 125.0) > 0.8
    if card == "tbl":
        assert np.median(mass) < 153.0


@pytest.mark.slow
@pytest.mark.parametrize("card", ["tbl", "hlnuqq"])
def test_leptonic_jets_hold_their_charged_lepton(nominal, card):
    jets = resim.open(nominal(card, EVENTS[card]))[:]
    source = HardProcessSource(load_card(card))
    charges = set()
    for jet in jets:
        hard = source.event(int(jet.event)).particles
        from_w = hard["status"] == OUTGOING
        leptons = hard["id"][from_w & np.isin(np.abs(hard["id"]), [11, 13])]
        neutrinos = hard["id"][from_w & np.isin(np.abs(hard["id"]), [12, 14, 16])]
        if card == "hlnuqq":  # exactly one W -> l nu (and one W -> q q')
            assert len(leptons) == 1 and len(neutrinos) == 1, hard["id"]
            assert np.sum(from_w & (np.abs(hard["id"]) <= 5)) >= 2
        assert len(leptons) >= 1
        charges.add(int(np.sign(leptons[0])))
        pid = ak.to_numpy(jet.constituents.pid)
        pt = np.hypot(ak.to_numpy(jet.constituents.px), ak.to_numpy(jet.constituents.py))
        mine = np.isin(pid, leptons)
        # The prompt lepton is in the jet, and hard: not a soft lepton from a b decay.
        assert mine.any() and pt[mine].max() > 0.02 * jet.pt, (jet.event, leptons, pid)
    assert charges == {-1, 1}  # both charges (the filter keeps either W charge leptonic)


@pytest.mark.slow
def test_qcd_flavour_labels_and_gluon_splittings(tmp_path: Path):
    jets = resim.open(shipped("qcdflavour", tmp_path, 300, ("nominal", "seed")))[:]
    label = np.array(ak.to_list(jets.label))
    n_b, n_c = ak.to_numpy(jets.n_b_hadrons), ak.to_numpy(jets.n_c_hadrons)
    split = ak.to_numpy(jets.splitting)
    fraction = {name: np.mean(label == name) for name in ("light", "c", "b", "g")}
    # 2 -> 2 QCD above 450 GeV: gluons and light quarks share most jets; c and b are the
    # few per cent of partons the proton and g g -> Q Qbar give.
    assert 0.3 < fraction["g"] < 0.65 and 0.3 < fraction["light"] < 0.65, fraction
    assert 0.01 < fraction["c"] < 0.1 and 0.005 < fraction["b"] < 0.08, fraction
    # Hadron content follows the hard parton.
    assert np.mean(n_b[label == "b"] >= 1) > 0.8
    assert np.mean(n_c[label == "c"] >= 1) > 0.7
    assert np.mean((n_b[label == "light"] == 0) & (n_c[label == "light"] == 0)) > 0.85
    # A b jet's B hadron comes from its hard b, not from a gluon splitting.
    assert np.mean(split[label == "b"] == 5) < 0.3
    # Gluon jets: mostly g -> g g first; g -> q qbar, and B / C hadrons from g -> b bbar /
    # c cbar, a few per cent each.
    g = {SPLITTINGS[k]: np.mean(split[label == "g"] == k) for k in SPLITTINGS}
    assert 0.6 < g["g_gg"] < 0.95, g
    assert all(0 < g[k] < 0.2 for k in ("g_qq", "g_cc", "g_bb")), g
    # First-branching codes only for gluon jets.
    assert not np.isin(split[label != "g"], [1, 21]).any()
    # Per jet, not per group: the realizations of some gluon groups differ.
    group = ak.to_numpy(jets.group)
    gluon = label == "g"
    varies = [len(set(split[gluon & (group == k)])) > 1 for k in np.unique(group[gluon])]
    assert any(varies)

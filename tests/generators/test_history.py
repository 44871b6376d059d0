"""What resim reads from each realization's event record beyond its final state: heavy
hadrons and where their quark came from, the first branching of hard gluons, resonance
decay products. Checked on plain Pythia events whose answer the process fixes."""

from __future__ import annotations

import numpy as np
import pytest

from resim.generators.final_state import _event_ranges, _numpy
from resim.generators.history import G_GG, heavy_flavour, record_history
from resim.generators.pythia_setup import new_pythia


def test_heavy_flavour_of_pdg_ids():
    ids = np.array([511, -521, 5122, 10511, 531, 541, 553, 443, 411, -421, 4122, 4332, 211,
                    2212, 5, -4, 21, 5503, 4403, 11, 22, 100553, 20443, 3122])
    want = [5, 5, 5, 5, 5, 5, 0, 0, 4, 4, 4, 4, 0,
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    assert heavy_flavour(ids).tolist() == want


def _batch(process: str, events: int, *settings: str, seed: int = 7):
    pythia = new_pythia()
    for line in ("Beams:eCM = 13600", process, "PhaseSpace:pTHatMin = 450",
                 f"Random:seed = {seed}", *settings):
        assert pythia.readString(line)
    assert pythia.init()
    batch = pythia.nextBatch(events)
    prt, starts, stops = _event_ranges(batch)
    return record_history(prt, starts, stops, _numpy), batch


@pytest.mark.parametrize(("process", "hard_b"), [("HardQCD:hardbbbar = on", True),
                                                  ("HardQCD:gg2gg = on", False)])
def test_b_hadrons_know_whether_a_gluon_splitting_made_their_quark(process, hard_b):
    history, _ = _batch(process, 60)
    b = history.hadrons["flavour"] == 5
    split = history.hadrons["from_splitting"][b]
    if hard_b:
        # Every event has its two hard b quarks: most B hadrons come from them.
        assert b.sum() >= 100 and split.mean() < 0.2, (b.sum(), split.mean())
    else:
        # No b in the hard process: B hadrons come from g -> b bbar (or the proton's b).
        assert b.sum() >= 3 and split.mean() > 0.8, (b.sum(), split.mean())
    assert np.all(np.hypot(history.hadrons["px"], history.hadrons["py"]) > 5.0)


def test_hard_gluons_branch_mostly_into_gluons():
    history, batch = _batch("HardQCD:gg2gg = on", 100)
    branching = history.gluons["branching"]
    assert len(branching) == 200  # two outgoing gluons per event
    assert np.all(np.isin(branching, [1, 2, 3, 4, 5, G_GG]))
    gg = np.mean(branching == G_GG)
    assert 0.8 < gg < 0.99, gg
    # The recorded index is the hard gluon's place in its event record.
    first = batch[0].prt
    for i in history.gluons["index"][history.offsets["gluons"][0]:history.offsets["gluons"][1]]:
        assert int(first.id[i]) == 21 and abs(int(first.status[i])) == 23


def test_top_decay_products_follow_the_realized_top():
    history, batch = _batch("Top:gg2ttbar = on", 30, "24:onMode = off",
                            "24:onIfAny = 1 2 3 4 5")
    # Two tops per event, each t -> b W, W -> q q': three products (the quarks as the decay
    # made them, after the top's own radiation and recoils).
    counts = np.diff(history.offsets["products"])
    assert np.all(counts == 6), counts
    ev = batch[0].prt
    rows = slice(history.offsets["products"][0], history.offsets["products"][1])
    for index in np.unique(history.products["index"][rows]):
        assert abs(int(ev.id[index])) == 6 and abs(int(ev.status[index])) == 22

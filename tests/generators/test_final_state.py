"""Reading particles and truth objects columnar: the fast paths give what the plain
definitions give (visible final-state particles; coloured decay products of each object)."""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np
import pytest

from resim.card import load_card
from resim.generators.final_state import (
    COLUMNS,
    FinalState,
    ParticleTable,
    present,
    visible_final_state,
)
from resim.generators.hard_process import HardProcessSource
from resim.generators.pythia_setup import configure, initialize, new_pythia
from resim.truth import TruthObjects

CARDS = Path(__file__).parents[1] / "cards"


@pytest.fixture(scope="module")
def pythia():
    card = load_card(CARDS / "top_small.toml")
    settings = [s for s in HardProcessSource._settings(card) if "Level:all" not in s.line]
    pythia = new_pythia()
    configure(pythia, settings, card.path)
    initialize(pythia, card.path, "", "plain Pythia")
    return pythia


def reference(events: ak.Array, table: ParticleTable, pt_min: float) -> list[dict]:
    """The definition, spelt out with awkward's high-level operations, event by event."""
    out = []
    for event in ak.to_list(ak.drop_none(events, axis=0)):
        rows = []
        for p in event["prt"]:
            charge, visible = table.lookup(np.array([p["id"]]))
            if p["status"] > 0 and visible[0] and np.hypot(p["p"]["px"], p["p"]["py"]) >= pt_min:
                v = p["vProd"] or {"px": 0.0, "py": 0.0, "pz": 0.0}
                rows.append((p["p"]["px"], p["p"]["py"], p["p"]["pz"], p["p"]["e"], p["id"],
                             charge[0], v["px"], v["py"], v["pz"]))
        out.append(rows)
    return out


@pytest.mark.parametrize(("pt_min", "index"), [
    (0.0, [-1, 0, 1, -1, 2]),  # as nextBatch makes them: events back to back
    (1.0, [-1, 0, 1, -1, 2]),
    (0.0, [2, -1, 0]),  # out of order (the general path)
])
def test_visible_final_state_skips_failed_events_and_matches_the_definition(pythia, pt_min,
                                                                            index):
    batch = pythia.nextBatch(3, "none")
    # Failed events come back as None: make some, around and between the real ones.
    with_failures = ak.Array(ak.contents.IndexedOptionArray(
        ak.index.Index64(np.array(index)), batch.layout.content))
    table = ParticleTable(pythia.particleData)
    got = visible_final_state(with_failures, table, pt_min)
    assert len(got) == sum(i >= 0 for i in index) and list(got.columns) == list(COLUMNS)
    assert present(with_failures).tolist() == [i >= 0 for i in index]
    want = reference(with_failures, table, pt_min)
    assert got.counts.tolist() == [len(rows) for rows in want]
    flat = np.array([row for rows in want for row in rows])
    for k, name in enumerate(COLUMNS):
        assert np.array_equal(got.columns[name], flat[:, k]), name
    # No neutrinos; some displaced vertices (B, D, K0S decays) and some at the origin.
    assert not np.isin(np.abs(got.columns["pid"]), [12, 14, 16]).any()
    r = np.hypot(got.columns["vx"], got.columns["vy"])
    assert (r > 0).any() and (r == 0).any()
    if pt_min:
        assert np.hypot(got.columns["px"], got.columns["py"]).min() >= pt_min


def test_final_states_concatenate_and_give_fastjet_its_momenta(pythia):
    table = ParticleTable(pythia.particleData)
    a = visible_final_state(pythia.nextBatch(2, "none"), table)
    b = visible_final_state(pythia.nextBatch(3, "none"), table)
    both = FinalState.concatenate([a, b])
    assert len(both) == 5
    assert both.counts.tolist() == a.counts.tolist() + b.counts.tolist()
    momenta = both.momenta()
    assert ak.to_list(momenta[3].px) == ak.to_list(b.to_awkward()[1].px)
    assert ak.to_list(ak.num(momenta)) == both.counts.tolist()


def test_truth_objects_and_their_coloured_decay_products():
    card = load_card(CARDS / "top_small.toml")
    source = HardProcessSource(card)
    hard = [source.event(i) for i in range(6)]
    truth = TruthObjects.of(hard, card.objects)
    # Two tops per event, numbered within the event; group ids unique.
    assert truth.event.tolist() == [e for e in range(6) for _ in range(2)]
    assert truth.index.tolist() == [0, 1] * 6
    assert np.all(np.abs(truth.pid) == 6) and len(set(truth.group.tolist())) == 12
    assert abs(np.median(truth.p4.mass) - 172.5) < 2  # (Breit-Wigner tails reach far)
    # t -> b W -> b q q': exactly three coloured decay products per top, each near it.
    assert np.bincount(truth.daughter_object, minlength=12).tolist() == [3] * 12
    d_eta = truth.daughter_eta - truth.p4.eta[truth.daughter_object]
    d_phi = (truth.daughter_phi - truth.p4.phi[truth.daughter_object] + np.pi) % (2 * np.pi)
    assert np.median(np.hypot(d_eta, d_phi - np.pi)) < 0.8  # boosted: decays are collimated
    # An event alone gives the same objects as within a block.
    alone = TruthObjects.of(hard[3:4], card.objects)
    assert np.array_equal(alone.daughter_eta, truth.daughter_eta[truth.daughter_object // 2 == 3])
    assert TruthObjects.of([], card.objects).event.tolist() == []

"""Any hard event regenerates alone, bit for bit, from its index: the basis of
rank-independent output and of resuming."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import resim
from resim.card import load_card
from resim.generate import Pipeline
from resim.generators.hard_process import HardProcessSource
from resim.generators.seeds import PYTHIA_MAX_SEED, derive_seed
from resim.layout import TABLES

CARDS = Path(__file__).parents[1] / "cards"


def test_derived_seeds_are_stable_distinct_and_in_pythia_range():
    seeds = {derive_seed(1, "shower", "nominal", e, r, 0) for e in range(200) for r in range(5)}
    assert len(seeds) == 1000
    assert all(1 <= s <= PYTHIA_MAX_SEED for s in seeds)
    # A pure function: the same coordinates give the same seed in any process, any order.
    assert derive_seed(7, "hard", 3, 0) == derive_seed(7, "hard", 3, 0)
    assert derive_seed(7, "hard", 3, 0) != derive_seed(8, "hard", 3, 0)


def test_hard_event_does_not_depend_on_the_events_before_it():
    card = load_card(CARDS / "top_small.toml")
    in_order = HardProcessSource(card)
    events = [in_order.event(i) for i in range(6)]
    alone = HardProcessSource(card).event(4)
    assert np.array_equal(events[4].particles, alone.particles)
    assert (events[4].x1, events[4].x2, events[4].pdf1) == (alone.x1, alone.x2, alone.pdf1)
    assert not np.array_equal(events[3].particles, events[4].particles)


def rows_of_event(ds: resim.JetDataset, event: int) -> dict[str, dict[str, np.ndarray]]:
    """Every table's rows that belong to one hard event, read back from a data set."""
    jets_event = ds.column("jets", "event")
    sel = np.flatnonzero(jets_event == event)
    out = {"jets": {c: ds.column("jets", c)[sel] for c in TABLES["jets"]}}
    lo, hi = ds._offsets[sel[0]], ds._offsets[sel[-1] + 1]
    out["constituents"] = {c: ds.column("constituents", c, lo, hi)
                           for c in TABLES["constituents"]}
    for table in ("groups", "events"):
        mask = ds.column(table, "event") == event
        out[table] = {c: ds.column(table, c)[mask] for c in TABLES[table]}
    return out


def test_one_event_regenerated_alone_is_bit_identical(generate_card):
    """A card with every kind of variation: shower settings, Vincia, colour reconnection,
    and hadronization-only re-runs (two realizations each of nominal and hadronization)."""
    path = generate_card("all_stages")
    ds = resim.open(path)
    assert set(ds.variations) == {"nominal", "fsr_up", "vincia", "cr", "hadronization"}
    counts = ds.summary["variations"]
    assert all(counts[v] > 0 for v in ds.variations), counts

    card = load_card(CARDS / "all_stages.toml")
    tables, _ = Pipeline(card).block(4, 5)  # a fresh pipeline that never saw events 0-3
    stored = rows_of_event(ds, 4)
    assert len(tables["jets"]["pt"]) > 0
    for table, columns in stored.items():
        for name, values in columns.items():
            assert np.array_equal(tables[table][name], values), (table, name)


def test_same_card_and_seed_give_identical_files_and_another_seed_does_not(generate_card):
    a = resim.open(generate_card("smoke", events=4, output="a.h5"))
    b = resim.open(generate_card("smoke", events=4, output="b.h5"))
    c = resim.open(generate_card("smoke", events=4, seed=2, output="c.h5"))
    for table, columns in TABLES.items():
        for name in columns:
            assert np.array_equal(a.column(table, name), b.column(table, name)), (table, name)
    assert not np.array_equal(a.column("jets", "pt"), c.column("jets", "pt"))

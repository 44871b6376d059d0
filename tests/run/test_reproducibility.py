"""Any hard event regenerates alone, bit for bit, from its index: the basis of
rank-independent output and of resuming."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

import resim
import resim.generate as resim_generate
from resim.card import load_card
from resim.generate import (
    BLOCK_SECONDS,
    FIRST_BLOCK_REALIZATIONS,
    MAX_BLOCK_REALIZATIONS,
    BlockSizes,
    Pipeline,
    generate,
)
from resim.generators import resimulate
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


def test_block_sizes_follow_the_card_or_the_measured_rate():
    card = load_card(CARDS / "top_small.toml")  # four realizations per hard event
    fixed = BlockSizes(dataclasses.replace(card, run=dataclasses.replace(card.run,
                                                                         batch_events=3)))
    fixed.record(1000, 0.001)
    assert fixed.next() == 3

    sizes = BlockSizes(card)
    assert sizes.next() == FIRST_BLOCK_REALIZATIONS // 4
    sizes.record(20, 2 * BLOCK_SECONDS)  # 2 hard events per second so far
    assert sizes.next() == 10
    sizes.record(10, 0.0)  # the rate is that of everything measured: 30 in 10 s
    assert sizes.next() == 15
    sizes.record(10**6, 1.0)  # a flood: capped, so a block's memory stays bounded
    assert sizes.next() == MAX_BLOCK_REALIZATIONS // 4
    slow = BlockSizes(card)
    slow.record(1, 1000.0)
    assert slow.next() == 1  # never an empty block


def test_output_does_not_depend_on_how_events_are_split_into_blocks_and_calls(
        tmp_path, monkeypatch):
    card = load_card("smoke").with_overrides(events=7)  # the shipped card

    def run(name: str, batch_events: int | None) -> resim.JetDataset:
        out = tmp_path / f"{name}.h5"
        generate(dataclasses.replace(card, run=dataclasses.replace(
            card.run, output=out, batch_events=batch_events)), progress=False)
        return resim.open(out)

    whole = run("whole", 7)  # one block, one nextBatch call per variation
    one_by_one = run("one", 1)
    # Adaptive sizes that change from block to block, and nextBatch calls of 2 events.
    monkeypatch.setattr(resim_generate, "FIRST_BLOCK_REALIZATIONS", 3 * card.realizations_per_event)
    monkeypatch.setattr(resim_generate, "BLOCK_SECONDS", 1e-9)
    monkeypatch.setattr(resimulate, "EVENTS_PER_CALL", 2)
    adaptive = run("adaptive", None)
    assert len(whole) > 0
    for table, columns in TABLES.items():
        for name in columns:
            expected = whole.column(table, name)
            for other in (one_by_one, adaptive):
                assert np.array_equal(other.column(table, name), expected), (table, name)

"""Les Houches input: event i of the file is hard event i, decays are added, errors are clear."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import resim
from resim.card import CardError, load_card
from resim.cli import main
from resim.generate import Pipeline
from resim.generators.hard_process import HardProcessSource, count_lhe_events
from resim.layout import TABLES

from .lhe import write_lhe

CARDS = Path(__file__).parents[1] / "cards"
PROCESS = ('settings = { "Top:gg2ttbar" = true, "Top:qqbar2ttbar" = true, '
           '"PhaseSpace:pTHatMin" = 450.0, "PhaseSpace:pTHatMax" = 1100.0 }')


@pytest.fixture(scope="module")
def hard_events():
    source = HardProcessSource(load_card(CARDS / "top_small.toml"))
    return [source.event(i) for i in range(12)]


def lhe_card(directory: Path, lhe_name: str) -> Path:
    text = (CARDS / "top_small.toml").read_text()
    assert PROCESS in text
    card = directory / f"{lhe_name}.toml"
    card.write_text(text.replace(PROCESS, f'lhe = "{lhe_name}"').replace("events = 100",
                                                                         "events = 12"))
    return card


def test_counting_events_is_blind_to_how_the_file_is_chunked(tmp_path):
    path = tmp_path / "x.lhe"
    path.write_bytes(b"<init></init>" + b"<event>x</event>" * 5 + b"<eventgroup>"
                     + b'<event id="3">y</event>')
    assert {count_lhe_events(path, chunk_bytes=n) for n in (1, 2, 3, 6, 7, 8, 1000)} == {6}


def test_events_of_a_les_houches_file_are_the_hard_events_in_order(tmp_path, hard_events):
    write_lhe(tmp_path / "tt.lhe", hard_events)
    write_lhe(tmp_path / "tt.lhe.gz", hard_events)
    plain = load_card(lhe_card(tmp_path, "tt.lhe")).with_overrides(output=tmp_path / "a.h5")
    zipped = load_card(lhe_card(tmp_path, "tt.lhe.gz")).with_overrides(output=tmp_path / "b.h5")
    from resim.generate import generate

    generate(plain, progress=False)
    generate(zipped, progress=False)
    a, b = resim.open(tmp_path / "a.h5"), resim.open(tmp_path / "b.h5")
    for table, columns in TABLES.items():
        for name in columns:
            assert np.array_equal(a.column(table, name), b.column(table, name)), (table, name)
    # Each group's truth top is the top of the file's event with the group's index, and
    # Pythia decayed it (t -> b W -> b q q') though the file has undecayed tops.
    groups = a.table("groups")
    assert len(groups) > 3
    for g in groups.to_list():
        tops = hard_events[g["event"]].particles
        tops = tops[np.abs(tops["id"]) == 6]
        pt = np.hypot(tops["px"], tops["py"])
        assert np.min(np.abs(pt - g["pt"])) < 1e-3 * g["pt"]
    assert a.summary["n_hard_failed"] == 0 and 150 < np.median(a.column("jets", "mass")) < 250

    # Event 7 alone (the reader skips to it) is bit-identical to event 7 in the full run.
    tables, _ = Pipeline(plain).block(7, 8)
    sel = a.column("jets", "event") == 7
    for name in TABLES["jets"]:
        assert np.array_equal(tables["jets"][name], a.column("jets", name)[sel]), name


def test_more_events_than_the_file_holds_is_a_card_error(tmp_path, hard_events):
    write_lhe(tmp_path / "tt.lhe", hard_events[:5])
    card = load_card(lhe_card(tmp_path, "tt.lhe"))
    with pytest.raises(CardError, match=r"run.events: the Les Houches file .* has 5 events, "
                                        "the run asks for 12"):
        Pipeline(card)


def test_a_corrupt_event_stops_the_run_naming_the_event(tmp_path, hard_events):
    write_lhe(tmp_path / "tt.lhe", hard_events, corrupt=4)
    card = lhe_card(tmp_path, "tt.lhe")
    out = tmp_path / "out.h5"
    result = CliRunner().invoke(main, ["generate", "--card", str(card), "--output", str(out),
                                       "--quiet"])
    assert result.exit_code == 1
    assert "hard event 4 (<event> block 5 of 12)" in result.stderr
    assert "rerun with --resume" in result.stderr and "\n" not in result.stderr.strip()
    assert not out.exists()

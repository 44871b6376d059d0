"""The output contract: resim.open, resim inspect, the file's metadata, and the run's
bookkeeping of which hard events are done."""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path

import awkward as ak
import h5py
import numpy as np
import pytest
import vector
from click.testing import CliRunner

import resim
from resim.cli import main
from resim.dataset import DatasetError
from resim.layout import TABLES, UNSHUFFLED
from resim.parallel import split_ranges
from resim.store import Segment, missing_ranges, parts_dir
from resim.summary import variation_setups


def test_open_gives_lazy_awkward_jet_records(top_dataset):
    ds = resim.open(top_dataset)
    n = len(ds)
    assert n == ds.summary["n_jets"] > 100
    jets = ds[10:20]
    assert len(jets) == 10
    for field in ("pt", "eta", "phi", "mass", "n_constituents", "group", "event", "variation",
                  "realization", "label", "constituents", "seed"):
        assert field in jets.fields
    assert set(jets.constituents.fields) >= {"px", "py", "pz", "E", "pid", "charge", "vx", "vy",
                                             "vz"}
    assert set(ak.to_list(ds[:].variation)) == {"nominal", "seed", "fsr_up", "fsr_down"}
    assert set(ak.to_list(jets.label)) == {"top"}
    # Slices agree with the whole, and an int gives one record.
    whole = ds[:]
    assert ak.to_list(whole[10:20].pt) == ak.to_list(jets.pt)
    assert ds[-1].pt == whole[-1].pt and ds[3].event == whole[3].event
    assert ak.all(ak.num(whole.constituents) == whole.n_constituents)
    with pytest.raises(IndexError):
        ds[n]
    with pytest.raises(ValueError, match="contiguous"):
        ds[::2]


def test_jets_are_the_sum_of_their_constituents_sorted_by_pt(top_dataset):
    jets = resim.open(top_dataset)[:]
    c = jets.constituents
    total = vector.zip({"px": ak.sum(c.px, axis=1), "py": ak.sum(c.py, axis=1),
                        "pz": ak.sum(c.pz, axis=1), "E": ak.sum(c.E, axis=1)})
    assert np.allclose(ak.to_numpy(total.pt), ak.to_numpy(jets.pt), rtol=1e-4)
    assert np.allclose(ak.to_numpy(total.mass), ak.to_numpy(jets.mass), rtol=1e-2, atol=0.5)
    pt = np.hypot(c.px, c.py)
    assert ak.all(pt[:, :-1] >= pt[:, 1:])
    # Visible final-state particles only: no neutrinos; charges of real particles.
    pid = np.abs(ak.to_numpy(ak.flatten(c.pid)))
    assert not np.isin(pid, [12, 14, 16]).any()
    charge = ak.to_numpy(ak.flatten(c.charge))
    assert set(np.unique(charge)) <= {-2, -1, 0, 1, 2}
    assert np.all(charge[pid == 22] == 0) and np.all(np.abs(charge[pid == 211]) == 1)
    # Some particles come from displaced decays (B, D, K0S, Lambda): vertices are kept.
    r = np.hypot(ak.to_numpy(ak.flatten(c.vx)), ak.to_numpy(ak.flatten(c.vy)))
    assert (r > 0.1).mean() > 0.01


def test_dataset_survives_pickling_for_dataloader_workers(top_dataset):
    ds = resim.open(top_dataset)
    first = ds[:5]
    clone = pickle.loads(pickle.dumps(ds))
    assert ak.to_list(clone[:5].pt) == ak.to_list(first.pt)


def test_inspect_text_and_json(top_dataset, tmp_path):
    result = CliRunner().invoke(main, ["inspect", str(top_dataset), "--json"])
    assert result.exit_code == 0, result.output
    d = json.loads(result.output)
    for key in ("n_groups", "n_jets", "variations", "labels", "n_failed"):
        assert key in d
    assert sum(d["variations"].values()) == d["n_jets"]
    assert d["labels"] == {"top": d["n_groups"]}
    plot = tmp_path / "summary.png"
    result = CliRunner().invoke(main, ["inspect", str(top_dataset), "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    assert "groups" in result.output and "fsr_up" in result.output
    assert plot.stat().st_size > 10_000


def test_inspect_plots_a_data_set_without_jets(tmp_path, generate_card):
    """A card whose cuts kept no jet: the plot was made, with numpy's and matplotlib's
    warnings on stderr."""
    card = tmp_path / "nothing.toml"
    card.write_text((Path(__file__).parents[1] / "cards" / "top_small.toml").read_text()
                    .replace("pt_min = 500.0\npt_max = 1000.0", "pt_min = 6000.0\npt_max = 7000.0"))
    empty = generate_card(card, events=2)
    plot = tmp_path / "empty.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = CliRunner().invoke(main, ["inspect", str(empty), "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    assert "0 groups, 0 jets" in result.stdout and result.stderr == ""
    assert plot.stat().st_size > 10_000


def test_inspect_names_each_variations_stage(top_dataset):
    result = CliRunner().invoke(main, ["inspect", str(top_dataset)])
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split()[1] for line in result.output.splitlines()
            if line.split() and line.split()[0] in ("nominal", "seed", "fsr_up", "fsr_down")}
    assert rows == dict.fromkeys(("nominal", "seed", "fsr_up", "fsr_down"), "shower")
    assert "pileup" not in result.output  # no pileup column without pileup
    d = json.loads(CliRunner().invoke(main, ["inspect", str(top_dataset), "--json"]).output)
    assert {v["stage"] for v in d["per_variation"].values()} == {"shower"}
    assert all(v["pileup"] is None for v in d["per_variation"].values())


def test_inspect_reads_the_stages_of_files_older_than_stored_stages():
    # Format version 1 stored no stages in its summary: they come from the card's text.
    data = Path(__file__).parents[1] / "data" / "format1.h5"
    result = CliRunner().invoke(main, ["inspect", str(data)])
    assert result.exit_code == 0, result.output
    assert [line.split()[:2] for line in result.output.splitlines()
            if line.strip().startswith("fsr_")] == [["fsr_up", "shower"], ["fsr_down", "shower"]]
    card = ('[variations.nominal]\n[variations.had]\nstage = "hadronization"\n')
    setups = variation_setups({"card": card, "summary": json.dumps({"events": 4})},
                              ("nominal", "had"))
    assert setups == {"nominal": {"stage": "shower", "pileup": None},
                      "had": {"stage": "hadronization", "pileup": None}}
    # A converted benchmark has no card: its stage is unknown, shown as "-".
    assert variation_setups({"card": "", "summary": "{}"}, ("nominal",)) == {
        "nominal": {"stage": None, "pileup": None}}


def test_file_records_how_it_was_made(top_dataset):
    ds = resim.open(top_dataset)
    a = ds.attrs
    assert "[variations.fsr_up]" in ds.card
    assert a["seed"] == 11 and a["n_events"] == 100
    for key in ("resim_version", "pythia_version", "fastjet_version", "hdf5_version", "created"):
        assert a[key]
    assert a["pythia_version"].startswith("8.31")


def test_reading_an_unfinished_run_says_what_to_do(tmp_path):
    (tmp_path / "run.h5.parts").mkdir()
    with pytest.raises(DatasetError, match=r"has not finished.*--resume"):
        resim.open(tmp_path / "run.h5")
    with pytest.raises(DatasetError, match="no such file"):
        resim.open(tmp_path / "other.h5")
    result = CliRunner().invoke(main, ["inspect", str(tmp_path / "other.h5")])
    assert result.exit_code == 2


def test_missing_ranges_and_rank_shares():
    seg = [Segment(path=None, first=0, done=30), Segment(path=None, first=50, done=60)]
    assert missing_ranges(seg, 100) == [(30, 50), (60, 100)]
    assert missing_ranges([], 10) == [(0, 10)]
    shares = split_ranges([(30, 50), (60, 100)], 3)
    flat = [e for share in shares for a, b in share for e in range(a, b)]
    assert flat == [*range(30, 50), *range(60, 100)]
    assert [sum(b - a for a, b in s) for s in shares] == [20, 20, 20]
    assert split_ranges([(0, 2)], 3) == [[], [(0, 1)], [(1, 2)]]


def test_merge_makes_a_self_contained_copy(top_dataset, tmp_path):
    target = tmp_path / "merged.h5"
    result = CliRunner().invoke(main, ["merge", str(top_dataset), str(target)])
    assert result.exit_code == 0, result.output
    a, b = resim.open(top_dataset), resim.open(target)
    assert not b._h5["jets/pt"].is_virtual and a._h5["jets/pt"].is_virtual
    for table, columns in TABLES.items():
        for name in columns:
            assert np.array_equal(a.column(table, name), b.column(table, name)), (table, name)
    assert b.card == a.card and b.summary == a.summary
    result = CliRunner().invoke(main, ["merge", str(top_dataset), str(target)])
    assert result.exit_code == 2 and "exists" in result.stderr


def test_every_column_is_stored_with_its_own_filters(top_dataset, tmp_path):
    """Segments and a merged copy alike: gzip with checksums everywhere, shuffle except
    where it makes a column larger (PDG ids, production vertices)."""
    target = tmp_path / "merged.h5"
    assert CliRunner().invoke(main, ["merge", str(top_dataset), str(target)]).exit_code == 0
    files = [*parts_dir(top_dataset).glob("events-*.h5"), target]
    for path in files:
        with h5py.File(path, "r") as f:
            for table, columns in TABLES.items():
                for name in columns:
                    ds = f[table][name]
                    assert ds.compression == "gzip" and ds.fletcher32, (path, table, name)
                    assert ds.shuffle == ((table, name) not in UNSHUFFLED), (table, name)
    assert ("constituents", "vz") in UNSHUFFLED and ("constituents", "px") not in UNSHUFFLED

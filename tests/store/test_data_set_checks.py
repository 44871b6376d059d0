"""A data set is never read as zeros or as another run's data: every reader checks that
each segment the data set maps is there, whole and of the same run; a data set renamed
together with its .parts folder still reads; anything else is one line naming the file
and the segment, never a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import resim
from resim.cli import main
from resim.dataset import DatasetError
from resim.layout import TABLES
from resim.store import parts_dir


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """A small finished run, ``a.h5`` + ``a.h5.parts`` (copied by each test)."""
    from resim.card import load_card
    from resim.generate import generate

    output = tmp_path_factory.mktemp("made") / "a.h5"
    generate(load_card("smoke").with_overrides(events=3, output=output), progress=False)
    return output


def copy_run(made: Path, directory: Path, name: str = "a.h5") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(made, directory / name)
    shutil.copytree(parts_dir(made), parts_dir(directory / name))
    return directory / name


def columns(path: Path) -> dict[str, np.ndarray]:
    with resim.open(path) as ds:
        return {f"{t}/{c}": ds.column(t, c) for t, cols in TABLES.items() for c in cols}


def inspect(path: Path):
    return CliRunner().invoke(main, ["inspect", str(path)])


def assert_one_line_error(result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert message.startswith("error: ") and "\n" not in message, message
    assert "Traceback" not in result.output
    for word in words:
        assert word in message, message


def test_hdf5_reads_a_missing_virtual_source_as_zeros_without_an_error(tmp_path):
    """The HDF5 behaviour the checks here exist for: a virtual data set whose source file is
    gone reads its fill value, zeros, and raises nothing; and it reads any file that has
    the source's name as if it were the source."""
    source = tmp_path / "source.h5"
    with h5py.File(source, "w") as f:
        f["x"] = np.arange(1, 11, dtype=np.float32)
    layout = h5py.VirtualLayout(shape=(10,), dtype=np.float32)
    layout[:] = h5py.VirtualSource("source.h5", "x", shape=(10,))
    with h5py.File(tmp_path / "view.h5", "w") as f:
        f.create_virtual_dataset("x", layout)
    with h5py.File(tmp_path / "view.h5", "r") as f:
        assert f["x"][:].tolist() == list(range(1, 11))
    source.rename(tmp_path / "elsewhere.h5")
    with h5py.File(tmp_path / "view.h5", "r") as f:
        assert f["x"][:].tolist() == [0.0] * 10  # no error: silently zeros
    with h5py.File(source, "w") as f:  # another file of that name
        f["x"] = np.full(10, 7, dtype=np.float32)
    with h5py.File(tmp_path / "view.h5", "r") as f:
        assert f["x"][:].tolist() == [7.0] * 10


def test_a_pair_renamed_together_reads_the_same_data(made, tmp_path):
    expected = columns(made)
    a = copy_run(made, tmp_path)
    b = tmp_path / "b%d.h5"  # a "%" too: HDF5 reads it as a pattern unless escaped
    a.rename(b)
    parts_dir(a).rename(parts_dir(b))
    got = columns(b)
    assert got.keys() == expected.keys()
    for name, values in expected.items():
        assert np.array_equal(got[name], values), name
    assert (got["jets/pt"] > 0).all() and (got["jets/n_constituents"] > 0).all()
    with resim.open(b) as ds:
        assert len(ds[:].constituents[0]) > 0
    result = CliRunner().invoke(main, ["inspect", str(b), "--json"])
    assert result.exit_code == 0, result.output
    assert all(v["mean_mass"] > 50 for v in json.loads(result.output)["per_variation"].values())
    merged = tmp_path / "merged.h5"
    assert CliRunner().invoke(main, ["merge", str(b), str(merged)]).exit_code == 0
    for name, values in columns(merged).items():
        assert np.array_equal(values, expected[name]), name
    # Only the data set renamed, its folder left as it was made: read where it was made.
    c = tmp_path / "c.h5"
    b.rename(c)
    parts_dir(b).rename(parts_dir(a))
    assert np.array_equal(columns(c)["constituents/px"], expected["constituents/px"])


def test_the_trainer_reads_a_renamed_pair_and_refuses_a_moved_copy(made, tmp_path):
    from resim.train.data import JetData

    a = copy_run(made, tmp_path / "x")
    b = tmp_path / "x" / "b.h5"
    a.rename(b)
    parts_dir(a).rename(parts_dir(b))
    data = JetData(b)
    assert data.particles(np.arange(data.n_jets), 8).mask.any()
    copy_run(made, tmp_path / "y")
    shutil.copy(b, tmp_path / "y" / "b.h5")  # no b.h5.parts beside it
    shutil.rmtree(parts_dir(tmp_path / "y" / "a.h5"))
    with pytest.raises(DatasetError, match=r"b\.h5: its segments are missing"):
        JetData(tmp_path / "y" / "b.h5")


def test_a_copy_beside_another_runs_folder_is_refused(made, generate_card, tmp_path):
    # Another run whose output has the same name, in another folder.
    other = generate_card("smoke", events=2, seed=7, output="a.h5")
    moved = other.parent / "moved.h5"
    shutil.copy(made, moved)  # made's data set, beside other's a.h5.parts
    with pytest.raises(DatasetError, match="belongs to another run"):
        resim.open(moved)
    result = inspect(moved)
    assert_one_line_error(result, str(moved), "a.h5.parts/events-0000000000.h5",
                          "belongs to another run", "rename or move both together")
    result = CliRunner().invoke(main, ["merge", str(moved), str(tmp_path / "m.h5")])
    assert_one_line_error(result, "belongs to another run")
    assert not (tmp_path / "m.h5").exists()


def test_missing_or_damaged_segments_are_one_line_errors_never_zeros(made, tmp_path):
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(made, alone / "a.h5")
    assert_one_line_error(inspect(alone / "a.h5"), f"{alone / 'a.h5'}: its segment folder "
                          "a.h5.parts/ is missing", "side by side")
    renamed = alone / "b.h5"
    (alone / "a.h5").rename(renamed)
    assert_one_line_error(inspect(renamed), "neither a.h5.parts/ (where it was written) nor "
                          "b.h5.parts/ is beside it")

    a = copy_run(made, tmp_path / "gone")
    segment = next(parts_dir(a).glob("events-*.h5"))
    segment.unlink()
    assert_one_line_error(inspect(a), f"segment a.h5.parts/{segment.name} is missing",
                          "--resume")

    a = copy_run(made, tmp_path / "truncated")
    segment = next(parts_dir(a).glob("events-*.h5"))
    with open(segment, "r+b") as f:
        f.truncate(4000)
    assert_one_line_error(inspect(a), f"segment a.h5.parts/{segment.name} cannot be read: "
                          "truncated HDF5 file (4000 of its")

    a = copy_run(made, tmp_path / "short")
    segment = next(parts_dir(a).glob("events-*.h5"))
    with h5py.File(segment, "r+") as f:
        f["jets/mass"].resize((f["jets/mass"].shape[0] - 1,))
    assert_one_line_error(inspect(a), "rows of jets/mass, the data set reads")


def test_a_damaged_chunk_read_names_the_data_set_and_the_segment(made, tmp_path, damage_chunk):
    a = copy_run(made, tmp_path)
    segment = next(parts_dir(a).glob("events-*.h5"))
    damage_chunk(segment, "constituents/px", 0)
    with resim.open(a) as ds, pytest.raises(DatasetError) as err:
        ds[0:2]
    assert str(err.value).startswith(f"{a}: cannot read constituents/px rows ")
    assert f"(segment a.h5.parts/{segment.name}): damaged data" in str(err.value)
    result = CliRunner().invoke(main, ["merge", str(a), str(tmp_path / "m.h5")])
    assert_one_line_error(result, f"a.h5.parts/{segment.name}", "damaged data")
    assert not (tmp_path / "m.h5").exists() and not (tmp_path / "m.h5.tmp").exists()


def test_files_made_before_run_identities_open_and_are_checked_by_length(made, tmp_path):
    a = copy_run(made, tmp_path / "old")
    for path in [a, *parts_dir(a).glob("events-*.h5")]:
        with h5py.File(path, "r+") as f:
            del f.attrs["run_id"]
    expected = columns(made)
    assert np.array_equal(columns(a)["jets/pt"], expected["jets/pt"])
    b = a.with_name("b.h5")
    a.rename(b)
    parts_dir(a).rename(parts_dir(b))
    assert np.array_equal(columns(b)["constituents/E"], expected["constituents/E"])
    segment = next(parts_dir(b).glob("events-*.h5"))
    with h5py.File(segment, "r+") as f:
        f["constituents/E"].resize((10,))
    with pytest.raises(DatasetError, match="holds 10 rows of constituents/E"):
        resim.open(b)


def test_what_is_not_a_data_set_is_one_line_naming_it(made, tmp_path):
    cases = {
        "text.h5": lambda p: p.write_text("jets, honestly\n"),
        "empty.h5": lambda p: p.write_bytes(b""),
        "truncated.h5": lambda p: p.write_bytes(made.read_bytes()[:3000]),
        "plain.h5": lambda p: h5py.File(p, "w").close(),
        "folder.h5": lambda p: p.mkdir(),
    }
    words = {"text.h5": "not a resim data set (not an HDF5 file",
             "empty.h5": "not a resim data set (not an HDF5 file",
             "truncated.h5": "truncated HDF5 file (3000 of its",
             "plain.h5": "not a resim data set (no format='resim-jets' attribute)",
             "folder.h5": "a folder, not a data set file"}
    for name, make in cases.items():
        path = tmp_path / name
        make(path)
        assert_one_line_error(inspect(path), f"error: {path}: {words[name]}")
        with pytest.raises(DatasetError, match="^" + str(path)):
            resim.open(path)
    result = inspect(parts_dir(made))
    assert_one_line_error(result, "a run's segment folder; open a.h5")


def test_files_are_not_written_into_folders_that_do_not_exist(made, tmp_path):
    typo = tmp_path / "plots-typo"
    result = CliRunner().invoke(main, ["inspect", str(made), "--plot", str(typo / "a.png")])
    assert_one_line_error(result, f"the folder {typo} does not exist")
    result = CliRunner().invoke(main, ["merge", str(made), str(typo / "m.h5")])
    assert_one_line_error(result, f"the folder {typo} does not exist")
    assert not typo.exists()

"""Robustness evaluation (``resim evaluate --shift``): a tagger fine-tuned on nominal jets,
evaluated on every variation of the same groups.

The session data sets (tops, q/g jets; variations nominal, seed, fsr_up, fsr_down) are
copied with their ``fsr_down`` jets deliberately distorted: every constituent 4-vector of
the top jets divided by 3 and of the QCD jets multiplied by 3, so tops lose their mass and
QCD jets gain some. A tagger must then look very different there, while on ``seed`` (the
same physics with other random numbers) it moves only by the statistical floor.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from resim.cli import main
from resim.ranges import ranges
from resim.train.config import parse_config
from resim.train.data import LabelledJets
from resim.train.evaluate import auto_bins, evaluate_shift, format_shift_table
from resim.train.finetune import finetune
from resim.train.loop import RunError, load_checkpoint

from .tiny import TINY_TRANSFORMER

VARIATIONS = ["nominal", "seed", "fsr_up", "fsr_down"]

#: A tiny transformer trained from scratch on the nominal jets only (data.variations = []).
TAGGER = TINY_TRANSFORMER + """

[data]
max_particles = 32
batch_size = 64
splits = [0.6, 0.0, 0.4]
classes = { qcd = ["q", "g"], top = ["top"] }

[optimizer.schedule]
name = "constant"

[run]
epochs = 20
threads = 1
"""


pytestmark = pytest.mark.usefixtures("one_thread")


def distorted_copy(source: Path, directory: Path, variation: str, factor: float) -> Path:
    """A copy of the data set ``source`` with the constituents' (px, py, pz, E) of the jets
    of ``variation`` multiplied by ``factor`` (mass and pT scale, angles stay)."""
    directory.mkdir(parents=True, exist_ok=True)
    output = directory / source.name
    shutil.copy(source, output)
    shutil.copytree(source.parent / f"{source.name}.parts", directory / f"{source.name}.parts")
    with h5py.File(output) as f:
        code = list(f.attrs["variations"]).index(variation)
    for part in sorted((directory / f"{source.name}.parts").glob("events-*.h5")):
        with h5py.File(part, "r+") as h:
            var = h["jets/variation"][:]
            count = h["jets/n_constituents"][:].astype(np.int64)
            rows = ranges((np.cumsum(count) - count)[var == code], count[var == code])[0]
            for column in ("px", "py", "pz", "E"):
                values = h["constituents"][column][:]
                values[rows] *= factor
                h["constituents"][column][:] = values
    return output


@pytest.fixture(scope="module")
def data(top_dataset: Path, qcd_dataset: Path,
         tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    directory = tmp_path_factory.mktemp("shifted")
    return [distorted_copy(top_dataset, directory, "fsr_down", 1 / 3),
            distorted_copy(qcd_dataset, directory, "fsr_down", 3.0)]


@pytest.fixture(scope="module")
def tagger(data: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("tagger")
    finetune(parse_config(TAGGER, "tagger.toml"), data, out, progress=False)
    return out / "last.pt"


@pytest.fixture(scope="module")
def shift(data: list[Path], tagger: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shift evaluation on all groups (the test split alone is ~25 jets per class)."""
    out = tmp_path_factory.mktemp("shift")
    evaluate_shift(tagger, data, out, split="all")
    return out


def test_shift_json_lists_every_variation_and_the_reference_does_not_move(
        data: list[Path], tagger: Path, shift: Path) -> None:
    result = json.loads((shift / "shift.json").read_text())
    assert load_checkpoint(tagger)["data"]["trained_on"] == ["nominal"]
    assert result["trained_on"] == ["nominal"] and result["reference"] == "nominal"
    assert list(result["variations"]) == VARIATIONS
    assert result["split"] == "all" and result["class_names"] == ["qcd", "top"]
    ref = result["variations"]["nominal"]
    for key in ("accuracy", "auc", "rejection_at_0.3", "rejection_at_0.5"):
        assert ref["delta"][key] == 0 and ref["relative_delta"][key] == 0
        assert ref["delta"]["pairs"]["top_vs_qcd"].get(key, 0) == 0
    assert ref["js_distance"] == {"qcd": 0.0, "top": 0.0} and ref["js_distance_mean"] == 0
    assert ref["groups_with_reference"] == ref["n_groups"]
    # every jet of every variation, once
    everything = LabelledJets(data, split="all", variations="all",
                              classes={"qcd": ["q", "g"], "top": ["top"]})
    n_jets = {v: result["variations"][v]["metrics"]["n_jets"] for v in VARIATIONS}
    assert sum(n_jets.values()) == everything.n_jets and min(n_jets.values()) > 80
    for v in VARIATIONS[1:]:  # some groups lose a jet in a variation: fewer shared groups
        entry = result["variations"][v]
        assert 0 < entry["groups_with_reference"] <= min(entry["n_groups"], ref["n_groups"])
        assert entry["delta"]["auc"] == pytest.approx(
            entry["metrics"]["auc"] - ref["metrics"]["auc"])
    assert len(result["bin_edges"]) - 1 == auto_bins(min(
        ref["metrics"]["class_counts"].values()))
    png = (shift / "shift.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_seed_variation_moves_the_outputs_far_less_than_a_distorted_one(shift: Path) -> None:
    result = json.loads((shift / "shift.json").read_text())
    seed, distorted = result["variations"]["seed"], result["variations"]["fsr_down"]
    print(format_shift_table(result))
    # seed: the same physics, only counting noise (~0.1-0.2 on ~60 jets per class)
    assert seed["js_distance_mean"] < 0.3
    assert distorted["js_distance_mean"] > seed["js_distance_mean"] + 0.2  # beyond the floor
    # tops that look like QCD and vice versa: the tagger loses its discrimination (how far
    # it inverts depends on what the tiny tagger happened to learn from ~100 jets)
    assert distorted["metrics"]["auc"] < 0.6 and distorted["delta"]["auc"] < -0.3
    assert abs(seed["delta"]["auc"]) < abs(distorted["delta"]["auc"]) / 2


def test_shift_errors(data: list[Path], tagger: Path, shift: Path, tmp_path: Path) -> None:
    with pytest.raises(RunError, match=r"reference variation 'vincia' is not in the data "
                                       r"\(it has nominal, seed, fsr_up, fsr_down\)"):
        evaluate_shift(tagger, data, tmp_path / "a", reference="vincia")
    assert not (tmp_path / "a").exists()
    with pytest.raises(RunError, match="signal 'tops' is not a class"):
        evaluate_shift(tagger, data, tmp_path / "a", signal="tops")
    with pytest.raises(RunError, match=r"holds a shift evaluation \(shift\.json, shift\.png\)"):
        evaluate_shift(tagger, data, shift)
    with pytest.raises(RunError, match="bins must be a positive integer"):
        evaluate_shift(tagger, data, tmp_path / "a", bins=0)


def test_auto_bins_square_root_rule() -> None:
    assert [auto_bins(n) for n in (0, 10, 30, 100, 1000, 10**6)] == [5, 5, 5, 10, 32, 50]


def test_cli_finetune_on_one_variation_and_shift_table(data: list[Path],
                                                      tmp_path: Path) -> None:
    (tmp_path / "tagger.toml").write_text(TAGGER)
    paths = [a for d in data for a in ("--data", str(d))]

    def run(*args: str | Path) -> tuple[int, str, str]:
        result = CliRunner().invoke(main, [str(a) for a in args])
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result.exit_code, result.stdout, result.stderr

    code, _, err = run("finetune", "--config", tmp_path / "tagger.toml", *paths, "--output",
                       tmp_path / "ft", "--variations", "seed", "--epochs", "1", "--quiet")
    assert code == 0, err
    assert load_checkpoint(tmp_path / "ft" / "last.pt")["data"]["trained_on"] == ["seed"]
    checkpoint = tmp_path / "ft" / "last.pt"
    code, out, err = run("evaluate", "--checkpoint", checkpoint, *paths, "--output",
                         tmp_path / "ev", "--shift", "--reference", "seed")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["variation", "jets", "accuracy", "AUC"]
    assert lines[0].split()[-4:] == ["JS", "qcd", "JS", "top"]
    rows = {line.split()[0]: line for line in lines[1:5]}
    assert list(rows) == VARIATIONS and "(ref)" in rows["seed"]
    shift = json.loads((tmp_path / "ev" / "shift.json").read_text())
    assert shift["split"] == "test" and shift["trained_on"] == ["seed"]
    nominal = shift["variations"]["nominal"]
    assert rows["nominal"].split()[1] == str(nominal["metrics"]["n_jets"])
    assert f"{nominal['js_distance']['top']:.3f}" in rows["nominal"]
    assert out.rstrip().endswith(f"{tmp_path / 'ev' / 'shift.png'}")

    # mistakes: one line, exit code 2
    code, _, err = run("evaluate", "--checkpoint", checkpoint, *paths, "--output",
                       tmp_path / "ev2", "--shift", "--reference", "herwig")
    assert code == 2 and err.count("\n") == 1 and "'herwig' is not in the data" in err
    code, _, err = run("evaluate", "--checkpoint", checkpoint, *paths, "--output",
                       tmp_path / "ev2", "--shift", "--variations", "all")
    assert code == 2 and "drop --variations" in err
    code, _, err = run("evaluate", "--checkpoint", checkpoint, *paths, "--output",
                       tmp_path / "ev2", "--reference", "seed")
    assert code == 2 and "--reference needs --shift" in err
    assert not (tmp_path / "ev2").exists()

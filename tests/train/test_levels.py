"""The trainer on detector-level jets: ``data.level`` chooses the jets, encoders trained on
them take JetClass's full per-particle features, and older and particle-level files work
as before."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import resim
from resim.cli import main
from resim.dataset import DatasetError
from resim.train.data import JetData, LabelledJets, PretrainBatches
from resim.train.features import DETECTOR_FEATURES, FEATURES, Particles, feature_names, features
from resim.train.loop import load_checkpoint

from .tiny import TINY_TRANSFORMER

DATA = Path(__file__).parents[1] / "data"
pytestmark = pytest.mark.usefixtures("one_thread")


def test_level_chooses_the_jets(detector_datasets):
    top, _ = detector_datasets
    ds = resim.open(top)
    level = ds.column("jets", "level")
    variation = ds.column("jets", "variation")
    copies = [ds.variations.index(v) for v in ("redetect", "worse")]  # stage = "detector"
    particle = JetData([top], level="particle")
    detector = JetData([top], level="detector")
    assert JetData([top]).level == "particle"  # auto, with both levels present
    # detector level: every detector-level jet; particle level: without the copies that
    # detector-stage variations carry (they equal their base's jets)
    assert detector.n_jets == int((level == 1).sum())
    assert particle.n_jets == int(((level == 0) & ~np.isin(variation, copies)).sum())
    assert not set(copies) & set(np.unique(particle.jet_variation).tolist())
    # what is read is what is stored: constituents of the chosen jets
    rows = np.arange(min(20, detector.n_jets))
    p = detector.particles(rows, 64)
    stored = ds[np.flatnonzero(level == 1)[0]:]
    assert np.allclose(p.d0_err[0][p.mask[0]], stored[0].constituents.d0_err[:64].to_numpy())
    assert (p.d0_err[p.mask & (p.charge != 0)] > 0).all()
    assert (particle.particles(rows, 64).d0_err == 0).all()


def test_mixed_levels_and_missing_levels_are_clear_errors(detector_datasets, tmp_path):
    top, _ = detector_datasets
    with pytest.raises(DatasetError, match="has no detector-level jets"):
        JetData([DATA / "format1.h5"], level="detector")
    with pytest.raises(ValueError, match="level must be auto"):
        JetData([top], level="both")
    # a converted benchmark is detector level only: auto picks it, and a particle-level
    # file with it has no level in common
    from resim.convert.common import JetBlock, write_benchmark

    n = 4
    block = JetBlock(counts=np.full(n, 3), constituents={
        "px": np.ones(3 * n), "py": np.zeros(3 * n), "pz": np.zeros(3 * n),
        "E": np.ones(3 * n) * 1.1, "pid": np.zeros(3 * n, np.int32),
        "charge": np.zeros(3 * n, np.int8), "vx": np.zeros(3 * n), "vy": np.zeros(3 * n),
        "vz": np.zeros(3 * n)}, label=np.zeros(n, np.int64),
        truth={k: np.zeros(n) for k in ("pid", "pt", "eta", "phi", "mass")})
    converted = tmp_path / "converted.h5"
    write_benchmark(converted, [block], labels=["x"], source="test", files=[], total=n,
                    split=None, versions={}, progress=False)
    assert JetData([converted]).level == "detector"
    with pytest.raises(DatasetError, match="no level is in all of them"):
        JetData([converted, DATA / "format1.h5"])


def test_format_1_files_train_as_before():
    data = JetData([DATA / "format1.h5"])
    assert data.level == "particle" and data.n_jets == 8
    p = data.particles(np.arange(8), 128)
    ds = resim.open(DATA / "format1.h5")
    flat = ds[:].constituents
    reference = Particles.from_awkward(flat, 128)  # derives kind, d0, dz from the columns
    for name in ("px", "kind", "d0", "dz", "d0_err"):
        assert np.array_equal(getattr(p, name), getattr(reference, name)), name
    x, _ = features(p)
    assert x.shape[-1] == len(FEATURES) == 15


def test_detector_features_add_the_uncertainties(detector_datasets):
    top, _ = detector_datasets
    data = JetData([top], level="detector")
    p = data.particles(np.arange(min(30, data.n_jets)), 64)
    x, _ = features(p, DETECTOR_FEATURES)
    base, _ = features(p)
    assert x.shape[-1] == 17 and feature_names("detector") == DETECTOR_FEATURES
    assert np.array_equal(x[..., :15], base)
    assert np.allclose(x[..., 15], np.clip(p.d0_err, 0, 1) * p.mask)
    assert (x[..., 15][p.mask & (p.charge != 0)] > 0).all()
    batches = PretrainBatches(data, split="all", batch_groups=4, views=2,
                              feature_names=DETECTOR_FEATURES, max_particles=32)
    assert next(iter(batches))["x"].shape[-1] == 17
    jets = LabelledJets(data, split="all", variations="all", batch_size=8,
                        feature_names=DETECTOR_FEATURES, max_particles=32)
    assert next(iter(jets))["x"].shape[-1] == 17


PRETRAIN = TINY_TRANSFORMER + """

[method]
name = "rs3l"

[data]
max_particles = 32
batch_size = 16
level = "detector"
splits = [0.6, 0.2, 0.2]

[run]
epochs = 1
threads = 1
"""

FINETUNE = """
[data]
max_particles = 32
batch_size = 16
variations = ["all"]
level = "{level}"
splits = [0.6, 0.2, 0.2]

[run]
epochs = 1
threads = 1
"""


def run(*args) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout + result.stderr


def test_train_finetune_evaluate_on_detector_level_jets(detector_datasets, tmp_path):
    top, qcd = detector_datasets
    (tmp_path / "pre.toml").write_text(PRETRAIN)
    data = ["--data", top, "--data", qcd]
    code, out = run("train", "--config", tmp_path / "pre.toml", *data, "--output",
                    tmp_path / "pre", "--quiet")
    assert code == 0, out
    state = load_checkpoint(tmp_path / "pre" / "last.pt")
    assert state["features"] == list(DETECTOR_FEATURES)
    assert state["encoder"]["n_features"] == 17 and state["data"]["level"] == "detector"
    # The detector-trained encoder fine-tuned on particle-level jets keeps its features.
    for level in ("detector", "particle"):
        (tmp_path / f"ft_{level}.toml").write_text(FINETUNE.format(level=level))
        code, out = run("finetune", "--checkpoint", tmp_path / "pre" / "last.pt", "--config",
                        tmp_path / f"ft_{level}.toml", *data, "--output",
                        tmp_path / f"ft_{level}", "--classes", "top=top",
                        "--classes", "qcd=q,g", "--quiet")
        assert code == 0, out
        ft = load_checkpoint(tmp_path / f"ft_{level}" / "last.pt")
        assert ft["features"] == list(DETECTOR_FEATURES) and ft["data"]["level"] == level
        code, out = run("evaluate", "--checkpoint", tmp_path / f"ft_{level}" / "last.pt",
                        *data, "--output", tmp_path / f"ev_{level}", "--split", "all")
        assert code == 0, out
        assert (tmp_path / f"ev_{level}" / "metrics.json").is_file()

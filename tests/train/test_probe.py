"""``resim probe`` and the training monitor on the session's small top + QCD data sets."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from resim.cli import main
from resim.train.config import parse_config
from resim.train.loop import load_checkpoint
from resim.train.pretrain import build_pretraining, open_data, pretrain
from resim.train.probe import jet_quantities

from .tiny import TINY_PART


@pytest.fixture(scope="module")
def tiny() -> str:
    """The tiny config, with a larger test split and two epochs."""
    return TINY_PART.replace("batch_size = 64", "batch_size = 64\nsplits = [0.6, 0.1, 0.3]") \
        + "\n[run]\nepochs = 2\nthreads = 1\n"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pretrained(top_dataset: Path, qcd_dataset: Path, tiny: str,
               tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("probe") / "pre"
    pretrain(parse_config(tiny, "tiny.toml"), [top_dataset, qcd_dataset], out, progress=False)
    return out / "last.pt"


def test_probe_writes_encoder_and_baseline_numbers(pretrained: Path, top_dataset: Path,
                                                   qcd_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "probe"
    args = ["probe", "--checkpoint", str(pretrained), "--data", str(top_dataset), "--data",
            str(qcd_dataset), "--output", str(out), "--classes", "qcd=q,g", "--classes",
            "top=top"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "R² abs_eta (shortcut)" in result.output and "probe.json" in result.output
    got = json.loads((out / "probe.json").read_text())
    assert got["labelled"] is True and got["classes"] == {"qcd": ["q", "g"], "top": ["top"]}
    for name in ("encoder", "baseline"):
        r = got[name]
        assert set(r["knn_accuracy"]) == {"5", "10", "20"}
        assert all(0 <= v <= 1 for v in r["knn_accuracy"].values())
        assert 0.5 < r["linear_auc"] <= 1 and 0 <= r["linear_accuracy"] <= 1
        assert 1 <= r["effective_rank"] <= 16 and r["embed_dim"] == 16
        assert 0 <= r["alignment"] <= 4 and -4 <= r["uniformity"] <= 0
        assert set(r["r2"]) == {"abs_eta", "log_pt", "mass", "n_constituents"}
        # top vs QCD: mass is partly linear in any embedding (fits on ~100 jets: noisy)
        assert r["r2"]["mass"] > 0
    # the baseline is the run's own starting point: its weights are the rebuilt config's
    state = load_checkpoint(pretrained)
    assert got["baseline_is"].startswith("the same config at its initial weights")
    assert got["encoder"] != got["baseline"]
    assert got["n_jets"]["test"] > 30 and got["splits"] == [0.6, 0.1, 0.3]
    assert got["steps"] == state["position"]["step"]
    assert (out / "probe.png").stat().st_size > 20_000
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 2 and "holds a probe" in again.output


def test_probe_without_labels_gives_the_label_free_numbers(pretrained: Path, top_dataset: Path,
                                                           tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["probe", "--checkpoint", str(pretrained), "--data",
                                       str(top_dataset), "--output", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    assert "note: fewer than two classes" in result.output
    got = json.loads((tmp_path / "p" / "probe.json").read_text())
    assert got["labelled"] is False and "label-free" in got["note"]
    for name in ("encoder", "baseline"):
        assert got[name]["knn_accuracy"] is None and got[name]["linear_auc"] is None
        assert got[name]["effective_rank"] > 1 and got[name]["r2"]["abs_eta"] is not None


def test_probe_of_a_single_jet_is_one_line(pretrained: Path, top_dataset: Path,
                                          qcd_dataset: Path, tmp_path: Path) -> None:
    """One jet in a split (--max-jets 1; or --classes leaving one) failed in the effective
    rank's ValueError, "a bug in resim"."""
    result = CliRunner().invoke(main, ["probe", "--checkpoint", str(pretrained), "--data",
                                       str(top_dataset), "--data", str(qcd_dataset),
                                       "--output", str(tmp_path / "p"), "--max-jets", "1"])
    assert (result.exit_code, result.stderr) == (2, "error: train split: 1 nominal jet of the "
                                                 "classes (top, q, g); the probe needs two or "
                                                 "more (more data, or other --classes)\n")
    assert not (tmp_path / "p").exists()


def test_probe_refuses_a_fine_tuning_checkpoint(tmp_path: Path, top_dataset: Path) -> None:
    bad = tmp_path / "x.pt"
    bad.write_bytes(b"not a checkpoint")
    result = CliRunner().invoke(main, ["probe", "--checkpoint", str(bad), "--data",
                                       str(top_dataset), "--output", str(tmp_path / "p")])
    assert result.exit_code == 2 and "not a readable checkpoint" in result.output


def test_jet_quantities_are_those_of_the_stored_jets(top_dataset: Path) -> None:
    import resim

    data = open_data([top_dataset])
    rows = np.arange(0, data.n_jets, 7)
    got = jet_quantities(data, rows)
    jets = resim.open(top_dataset)[:]
    np.testing.assert_allclose(got["abs_eta"], np.abs(np.asarray(jets.eta))[rows], atol=2e-3)
    np.testing.assert_allclose(np.exp(got["log_pt"]), np.asarray(jets.pt)[rows], rtol=2e-3)
    np.testing.assert_allclose(got["mass"], np.asarray(jets.mass)[rows], rtol=0.02, atol=0.5)
    assert (got["n_constituents"] == data.jet_count[rows]).all()


def test_training_monitors_knn_and_effective_rank(top_dataset: Path, qcd_dataset: Path,
                                                  tiny: str, tmp_path: Path) -> None:
    config = parse_config(tiny, "tiny.toml",
                          ["run.monitor_every=1", "data.splits=[0.5, 0.3, 0.2]"])
    result = pretrain(config, [top_dataset, qcd_dataset], tmp_path / "run", progress=False)
    assert 0 <= result.monitor["knn_accuracy"] <= 1
    assert 1 <= result.monitor["effective_rank"] <= 16
    with (tmp_path / "run" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    val = [r for r in rows if r["split"] == "val"]
    assert len(val) == 2 and all(r["knn_accuracy"] and r["effective_rank"] for r in val)
    assert all(float(r["monitor_seconds"]) > 0 and float(r["epoch_seconds"]) > 0 for r in val)
    assert all(r["knn_accuracy"] == "" for r in rows if r["split"] == "train")
    # monitoring is evaluation only: the weights are those of a run without it
    quiet = pretrain(config.with_overrides(["run.monitor_every=0"]),
                     [top_dataset, qcd_dataset], tmp_path / "quiet", progress=False)
    for key, value in result.model.state_dict().items():
        assert torch.equal(value, quiet.model.state_dict()[key]), key
    assert quiet.monitor == {}


def test_rs3l_variance_covariance_terms(top_dataset: Path, tiny: str) -> None:
    config = parse_config(tiny, "tiny.toml", ["method.var_weight=1.0", "method.cov_weight=0.5"])
    model = build_pretraining(config)
    from resim.train.loop import Runtime
    from resim.train.pretrain import pretrain_batches

    batch = next(iter(pretrain_batches(config, open_data([top_dataset]), "train",
                                       Runtime(torch.device("cpu")))))
    loss, logs = model(batch)
    assert {"nt_xent", "variance", "covariance"} <= set(logs)
    assert float(loss.detach()) == pytest.approx(logs["nt_xent"] + logs["variance"]
                                        + 0.5 * logs["covariance"], rel=1e-5)


@pytest.mark.slow
def test_shipped_rs3l_config_learns_the_jet_not_its_rapidity(generate_card,
                                                             tmp_path: Path) -> None:
    """RS3L with the shipped rs3l_part config on small generated top + QCD jets: the
    frozen embedding does not encode jet |eta| (the views' shared hard process), while the
    same run with lab-frame inputs and views does (the shortcut the default removes)."""
    from resim.train.config import load_config
    from resim.train.probe import probe_checkpoint

    # the shipped cards' kinematics, four variations; ~700 nominal jets in all
    data = [generate_card("top_small", events=400), generate_card("qcd_small", events=250)]
    small = ["data.max_particles=32", "data.splits=[0.6, 0.1, 0.3]", "run.epochs=4",
             "run.threads=1", "run.monitor_every=0"]
    r2 = {}
    for name, extra in (("shipped", []), ("lab", ["data.frame=lab"])):
        config = load_config("rs3l_part", [*small, *extra])
        pretrain(config, data, tmp_path / name, progress=False)
        got, _ = probe_checkpoint(tmp_path / name / "last.pt", data,
                                  {"qcd": ["q", "g"], "top": ["top"]})
        r2[name] = got["encoder"]["r2"]["abs_eta"]
        if name == "shipped":
            assert got["frame"] == "jet"
            assert got["encoder"]["linear_auc"] > 0.8  # top vs QCD from the frozen embedding
    print(f"R² of jet |eta| from the embedding: shipped {r2['shipped']:.2f}, lab {r2['lab']:.2f}")
    assert r2["shipped"] < 0.3 and r2["lab"] > 0.6

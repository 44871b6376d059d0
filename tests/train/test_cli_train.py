"""``resim train`` -> ``resim finetune`` -> ``resim evaluate`` end to end, and the one-line
errors (exit code 2) for user mistakes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import typing
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from resim.cli import main
from resim.train.checkpoint import Checkpoint
from resim.train.loop import load_checkpoint

from .tiny import TINY_TRANSFORMER

PRETRAIN = TINY_TRANSFORMER + """

[method]
name = "rs3l"

[data]
max_particles = 32
batch_size = 64

[run]
epochs = 1
threads = 1
"""

FINETUNE = """
[data]
max_particles = 32
batch_size = 64
variations = ["all"]

[run]
epochs = 1
threads = 1
"""


pytestmark = pytest.mark.usefixtures("one_thread")


def assert_declared(state: dict, kind: type) -> None:
    """Every key of a checkpoint (and of its records) is declared in its TypedDict
    (resim.train.checkpoint), and every required one is there."""
    hints = typing.get_type_hints(kind)
    assert kind.__required_keys__ <= set(state), kind.__required_keys__ - set(state)
    assert set(state) <= set(hints), set(state) - set(hints)
    for key, value in state.items():
        if typing.is_typeddict(hints[key]) and isinstance(value, dict):
            assert_declared(value, hints[key])


def run(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_train_finetune_evaluate(top_dataset: Path, qcd_dataset: Path, tmp_path: Path) -> None:
    (tmp_path / "tiny.toml").write_text(PRETRAIN)
    (tmp_path / "ft.toml").write_text(FINETUNE)
    data = ["--data", top_dataset, "--data", qcd_dataset]
    pre, ft, ev = tmp_path / "pre", tmp_path / "ft", tmp_path / "ev"

    code, out, err = run("train", "--config", tmp_path / "tiny.toml", *data, "--output", pre,
                         "--epochs", "2", "--max-jets", "300")
    assert code == 0, err
    assert f"{pre / 'last.pt'}: 2 epochs" in out
    assert "epoch 2/2, train loss" in err  # the per-epoch line (the bar goes to stderr too)
    state = load_checkpoint(pre / "last.pt")
    assert_declared(state, Checkpoint)
    assert state["config"]["overrides"] == ["run.epochs=2", "data.max_jets=300"]
    assert (pre / "metrics.csv").read_text().startswith("step,epoch,split,loss,lr,jets_per_s")

    code, out, err = run("train", *data, "--output", pre, "--resume", "--epochs", "3",
                         "--quiet")
    assert code == 0, err
    assert f"{pre / 'last.pt'}: 3 epochs" in out and err == ""

    code, out, err = run("finetune", "--checkpoint", pre / "last.pt", *data, "--output", ft,
                         "--config", tmp_path / "ft.toml", "--classes", "qcd=q,g",
                         "--classes", "top=top", "--fraction", "0.5", "--frozen", "--head",
                         "mlp", "--quiet")
    assert code == 0, err
    state = load_checkpoint(ft / "last.pt")
    assert_declared(state, Checkpoint)
    assert state["finetune"] == {"head": "mlp", "head_hidden": [128], "head_dropout": 0.1,
                                 "backbone": "fixed", "fraction": 0.5,
                                 "train_pooling": False,  # RS3L trained the pooling
                                 "backbone_lr": None,  # frozen: no backbone learning rate
                                 "calibrated_jets": state["finetune"]["calibrated_jets"]}
    assert state["finetune"]["calibrated_jets"] > 0  # BatchNorm calibrated on training jets
    assert state["classes"] == {"qcd": ["q", "g"], "top": ["top"]}

    code, out, err = run("evaluate", "--checkpoint", ft / "last.pt", *data, "--output", ev)
    assert code == 0, err
    metrics = json.loads((ev / "metrics.json").read_text())
    for key in ("accuracy", "auc", "rejection_at_0.3", "rejection_at_0.5"):
        assert isinstance(metrics[key], float), key
    assert metrics["variations"] == ["nominal", "seed", "fsr_up", "fsr_down"]
    assert metrics["signal"] == "top" and metrics["split"] == "test"
    assert f"AUC {metrics['auc']:.4f}" in out and (ev / "roc.png").exists()

    # Mistakes: one line on stderr, exit code 2, nothing written.
    code, out, err = run("train", "--config", tmp_path / "tiny.toml", *data, "--output", pre)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"error: {pre} holds another run") and "--resume" in err
    code, _, err = run("evaluate", "--checkpoint", ft / "last.pt", *data, "--output", ev)
    assert code == 2 and "holds an evaluation" in err
    code, _, err = run("evaluate", "--checkpoint", pre / "last.pt", *data, "--output",
                       tmp_path / "ev2")
    assert code == 2 and err.startswith(f"error: {pre / 'last.pt'}: not a fine-tuning "
                                        "checkpoint (kind 'pretrain')"), err
    assert not (tmp_path / "ev2").exists()
    code, _, err = run("finetune", "--checkpoint", pre / "last.pt", *data, "--output",
                       tmp_path / "ft2", "--classes", "qcd")
    assert code == 2 and "--classes qcd: expected NAME=LABEL" in err
    code, _, err = run("finetune", "--checkpoint", pre / "last.pt", *data, "--output",
                       tmp_path / "ft2", "--classes", "qcd=q", "--classes", "top=tau")
    assert code == 2 and "unknown label 'tau'" in err
    # Fine-tuning with other splits than pre-training's would train on its test jets.
    code, _, err = run("finetune", "--checkpoint", pre / "last.pt", *data, "--output",
                       tmp_path / "ft3", "--config", tmp_path / "ft.toml",
                       "--set", "data.splits=[0.7, 0.1, 0.2]")
    assert code == 2 and err.count("\n") == 1, err
    assert "data.splits: [0.7, 0.1, 0.2] differ from the splits [0.8, 0.1, 0.1]" in err
    assert str(pre / "last.pt") in err and not (tmp_path / "ft3" / "last.pt").exists()


def test_config_mistakes_are_one_line(tmp_path: Path, top_dataset: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(PRETRAIN.replace("num_layers = 1", "num_layer = 1"))
    code, _, err = run("train", "--config", bad, "--data", top_dataset, "--output",
                         tmp_path / "out")
    assert code == 2
    assert err == (f"error: {bad}: encoder.num_layer: encoder 'transformer': unknown setting "
                   "'num_layer'; valid: embed_dims, num_heads, num_layers, num_cls_layers, "
                   "ffn_ratio, dropout, attn_dropout, activation_dropout, length_groups\n")
    code, _, err = run("train", "--config", "rs3l_part", "--data", top_dataset, "--output",
                       tmp_path / "out", "--set", "optimizer.lr=0")
    assert code == 2 and "(--set optimizer.lr=0): optimizer.lr: must be > 0" in err
    # a bad value from a command's own option is named as it was typed
    code, _, err = run("train", "--config", "rs3l_part", "--data", top_dataset, "--output",
                       tmp_path / "out", "--epochs", "0")
    assert code == 2 and err.endswith("rs3l_part.toml (--epochs 0): run.epochs: must be an "
                                      "integer >= 1, got 0\n"), err
    code, _, err = run("finetune", "--data", top_dataset, "--output", tmp_path / "out",
                       "--fraction", "2")
    assert code == 2 and "(--fraction 2.0): finetune.fraction: must be <= 1.0" in err, err
    # one label, hence one class: it trained a classifier with nothing to tell apart
    scratch = tmp_path / "scratch.toml"
    scratch.write_text(FINETUNE + TINY_TRANSFORMER)
    code, _, err = run("finetune", "--config", scratch, "--data", top_dataset, "--output",
                       tmp_path / "out")
    assert code == 2 and err == (f"error: data: every jet of {top_dataset} is labelled top: a "
                                 "classifier needs two classes or more; add data of another "
                                 "label (e.g. --data qcd.h5)\n"), err
    code, _, err = run("train", "--config", "rs3l_part", "--data", tmp_path / "none.h5",
                       "--output", tmp_path / "out")
    assert code == 2 and "none.h5: no such data set file" in err
    code, _, err = run("train", "--config", "nope", "--data", top_dataset, "--output",
                       tmp_path / "out")
    assert code == 2 and "no shipped config of that name" in err
    code, _, err = run("train", "--data", top_dataset, "--output", tmp_path / "out")
    assert code == 2 and "give --config" in err
    # a method's setting out of its range: one line before any training (temperature 0
    # used to train, then fail in the probes' eigenvalues)
    for config, setting, words in [
            ("rs3l_part", "method.temperature=0",
             "(--set method.temperature=0): method.temperature: must be a finite number > 0"),
            ("vicreg_part", "method.gamma=0",
             "(--set method.gamma=0): method.gamma: must be a finite number > 0"),
            ("jepa_part", "method.ema_start=1.5", "jepa: need 0 <= ema_start <= ema_end")]:
        code, _, err = run("train", "--config", config, "--data", top_dataset, "--output",
                           tmp_path / "out", "--set", setting)
        assert code == 2 and words in err and "\n" not in err.rstrip("\n"), err
    assert not (tmp_path / "out").exists()


def test_configs_command() -> None:
    code, out, _ = run("configs")
    assert code == 0 and "rs3l_part" in out and "vicreg_particlenet" in out
    code, out, _ = run("configs", "rs3l_part")
    assert code == 0 and '[encoder]\nname = "part"' in out
    code, _, err = run("configs", "rs3l_nope")
    assert code == 2 and "no shipped config" in err


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume(top_dataset: Path, qcd_dataset: Path,
                                       tmp_path: Path) -> None:
    """A real ``kill -9`` of ``resim train`` wherever it happens to be, then ``--resume``:
    the same weights as a run that was never killed."""
    config = tmp_path / "tiny.toml"
    config.write_text(PRETRAIN.replace("epochs = 1", "epochs = 3\ncheckpoint_every = 2")
                      .replace("batch_size = 64", "batch_size = 32"))
    data = ["--data", str(top_dataset), "--data", str(qcd_dataset)]
    resim = [sys.executable, "-m", "resim.cli", "train", "--config", str(config), *data,
             "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # Not from the checkout: there `-m` would import its bare resim/, which has no
    # resim.train (that mapping exists only in the installed package).
    run = {"env": env, "cwd": tmp_path}
    full = subprocess.run([*resim, "--output", str(tmp_path / "full")], **run,
                          capture_output=True, text=True, timeout=900)
    assert full.returncode == 0, full.stderr

    out = tmp_path / "killed"
    proc = subprocess.Popen([*resim, "--output", str(out)], **run)
    deadline = time.time() + 600
    while time.time() < deadline:  # kill as soon as a mid-epoch checkpoint exists
        if (out / "last.pt").exists():
            try:
                if load_checkpoint(out / "last.pt")["position"]["batch"] > 0:
                    break
            except Exception:  # being replaced this very moment
                pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = load_checkpoint(out / "last.pt")["position"]
    assert before["step"] < load_checkpoint(tmp_path / "full" / "last.pt")["position"]["step"]
    resumed = subprocess.run([*resim, "--output", str(out), "--resume"], **run,
                             capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr
    a, b = load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(out / "last.pt")
    assert a["position"] == b["position"]
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key

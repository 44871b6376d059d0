"""The training loop on generated jets: learning, exact resumption, output-directory rules.

Tiny encoders (16 wide, one block, 32 particles) on the session data sets ``top_dataset``
(boosted tops) and ``qcd_dataset`` (q/g jets), one torch thread: each run takes seconds.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional

from resim.train.config import parse_config
from resim.train.evaluate import evaluate
from resim.train.finetune import calibrate_encoder, finetune, labelled_jets
from resim.train.loop import RunError, load_checkpoint
from resim.train.pretrain import (
    build_pretraining,
    encoder_from_checkpoint,
    open_data,
    pretrain,
    pretrain_batches,
)

from .tiny import TINY_PART

TINY = TINY_PART + """
[optimizer]
lr = 1e-3

[run]
epochs = 2
log_every = 1
threads = 1
"""

FINETUNE = """
[finetune]
head = "linear"
backbone = "floating"

[data]
max_particles = 32
batch_size = 64
variations = ["all"]
classes = { qcd = ["q", "g"], top = ["top"] }

[optimizer]
lr = 1e-3

[optimizer.schedule]
name = "constant"

[run]
epochs = 20
threads = 1
"""


#: The tiny encoder pre-trained by the particle-level objectives (one view per group).
MPM = TINY.replace('name = "rs3l"', 'name = "mpm"\ndecoder_dim = 16\ndecoder_layers = 1\n'
                   'decoder_heads = 2\norder_tokens = 32')
JEPA = TINY.replace('name = "rs3l"', 'name = "jepa"\npredictor_dim = 16\npredictor_layers = 1\n'
                    'predictor_heads = 2')


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(top_dataset: Path, qcd_dataset: Path) -> list[Path]:
    return [top_dataset, qcd_dataset]


def config(text: str = TINY, *overrides: str):
    return parse_config(text, "tiny.toml", overrides)


class KilledError(RuntimeError):
    """Stands in for a run being killed."""


def crash_at(step: int):
    def hook(pos) -> None:
        if pos.step == step:
            raise KilledError(f"killed after step {step}")

    return hook


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def csv_losses(path: Path) -> list[tuple[str, str, str]]:
    with path.open() as f:
        return [(r["step"], r["split"], r["loss"]) for r in csv.DictReader(f)]


@pytest.mark.parametrize("how", ["crash mid-epoch", "stop after k steps", "extend epochs"])
def test_resume_equals_uninterrupted_run(data: list[Path], tmp_path: Path, how: str) -> None:
    cfg = config()
    full = pretrain(cfg, data, tmp_path / "full", progress=False)
    per_epoch = full.position.step // 2
    assert per_epoch >= 3

    out = tmp_path / "resumed"
    if how == "crash mid-epoch":
        # checkpoints at steps 2, 4, ...; killed after step 3: steps 3.. are redone
        with pytest.raises(KilledError):
            pretrain(cfg.with_overrides(["run.checkpoint_every=2"]), data, out,
                     progress=False, on_step=crash_at(3))
        assert load_checkpoint(out / "last.pt")["position"] == {"epoch": 0, "batch": 2,
                                                                "step": 2}
    elif how == "stop after k steps":
        stopped = pretrain(cfg, data, out, progress=False, stop_after_steps=per_epoch + 1)
        assert not stopped.finished
        assert stopped.position.step == per_epoch + 1 and stopped.position.epoch == 1
    else:
        pretrain(cfg, data, out, progress=False, overrides=["run.epochs=1"])
    # the resumed crash run reads with two DataLoader workers: the batches must not change
    more = {"extend epochs": ["run.epochs=2"], "crash mid-epoch": ["run.num_workers=2"]}
    resumed = pretrain(None, None, out, resume=True, progress=False,
                       overrides=more.get(how, ()))
    assert resumed.finished and resumed.position.step == full.position.step

    a, b = load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(out / "last.pt")
    assert_same_state(a["model"], b["model"])
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    for key, state in a["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][key][name])
    assert torch.equal(a["rng"][0]["torch"], b["rng"][0]["torch"])
    # the metrics read as if the run had never stopped: same rows, same losses
    assert csv_losses(tmp_path / "full" / "metrics.csv") == csv_losses(out / "metrics.csv")


def test_output_directory_rules(data: list[Path], tmp_path: Path) -> None:
    cfg = config(TINY, "run.epochs=1", "data.max_jets=200")
    out = tmp_path / "run"
    with pytest.raises(RunError, match="nothing to resume"):
        pretrain(cfg, data, out, resume=True, progress=False)
    pretrain(cfg, data, out, progress=False)
    assert {p.name for p in out.iterdir()} >= {"last.pt", "metrics.csv", "tb", "config.toml"}
    with pytest.raises(RunError, match=r"holds another run \(last\.pt, metrics\.csv, tb"):
        pretrain(cfg, data, out, progress=False)
    with pytest.raises(RunError, match="exclude each other"):
        pretrain(cfg, data, out, resume=True, overwrite=True, progress=False)
    with pytest.raises(RunError, match=r"differs from the run.s config in optimizer\.lr"):
        pretrain(cfg.with_overrides(["optimizer.lr=0.1"]), data, out, resume=True,
                 progress=False)
    with pytest.raises(RunError, match=r"optimizer\.lr cannot change in a resumed run"):
        pretrain(None, None, out, resume=True, progress=False, overrides=["optimizer.lr=0.1"])
    with pytest.raises(RunError, match="was trained on"):
        pretrain(None, data[:1], out, resume=True, progress=False)
    with pytest.raises(RunError, match="nothing to resume"):
        pretrain(None, None, tmp_path / "elsewhere", resume=True, progress=False)
    (out / "mine.txt").write_text("not the run's")
    result = pretrain(cfg, data, out, overwrite=True, progress=False)
    assert result.finished and (out / "mine.txt").exists()  # --overwrite removes run files only
    state = load_checkpoint(out / "last.pt")
    assert state["kind"] == "pretrain" and state["finished"]
    assert state["config"]["overrides"] == ["run.epochs=1", "data.max_jets=200"]
    assert state["features"][:2] == ["deta", "dphi"] and "torch" in state["versions"]
    assert state["data"]["labels"] == ["top", "q", "g"]


def test_a_diverging_run_stops_in_one_line(data: list[Path], tmp_path: Path) -> None:
    """At lr = 1e10 the weights were NaN after two steps; the run went on until the
    validation monitor's eigenvalue solve failed ("a bug in resim")."""
    cfg = config(TINY, "run.epochs=2", "data.max_jets=200", "optimizer.lr=1e10")
    with pytest.raises(RunError, match=r"^the loss is (nan|inf|-inf) at step [2-9] \(epoch 1\): "
                                       r"the training diverged; lower optimizer\.lr"):
        pretrain(cfg, data, tmp_path / "run", progress=False)


def test_resuming_with_fewer_epochs_than_done_is_refused(data: list[Path],
                                                        tmp_path: Path) -> None:
    """It reported the run finished and rewrote config.toml with the smaller run.epochs."""
    out = tmp_path / "run"
    pretrain(config(TINY, "run.epochs=2", "data.max_jets=200"), data, out, progress=False)
    text = (out / "config.toml").read_text()
    with pytest.raises(RunError, match=rf"^--resume: the run in {out} has done 2 epochs, more "
                                       r"than run\.epochs = 1; give more epochs"):
        pretrain(None, None, out, resume=True, progress=False, overrides=["run.epochs=1"])
    assert (out / "config.toml").read_text() == text
    assert pretrain(None, None, out, resume=True, progress=False).finished  # as many: done


def test_resuming_on_remade_data_is_refused(data: list[Path], tmp_path: Path) -> None:
    """Another run's file at a run's path: --resume went on training on it, silently."""
    path = tmp_path / "top.h5"

    def put(source: Path) -> None:  # a data set with its segments, as generate leaves it
        shutil.rmtree(tmp_path / "top.h5.parts", ignore_errors=True)
        shutil.copy(source, path)
        shutil.copytree(source.parent / f"{source.name}.parts", tmp_path / "top.h5.parts")

    put(data[0])
    pretrain(config(TINY, "run.epochs=1", "data.max_jets=200"), [path, data[1]],
             tmp_path / "run", progress=False)
    put(data[1])
    with pytest.raises(RunError, match=rf"^--resume: {path}, {data[1]}: the data changed "
                                       r"since the run started \(other run_ids, n_jets, labels\)"):
        pretrain(None, None, tmp_path / "run", resume=True, progress=False,
                 overrides=["run.epochs=2"])
    put(data[0])  # the same files again: it continues
    assert pretrain(None, None, tmp_path / "run", resume=True, progress=False,
                    overrides=["run.epochs=2"]).position.epoch == 2


def latent_similarity(method, batches) -> tuple[float, float, float, float]:
    """Validation loss, mean cosine similarity of positive and of negative pairs in the
    contrastive latent space (projection-head output), and how often a jet's nearest
    neighbour there is its own positive (chance: 1 / (batch size - 1))."""
    method.eval()
    losses, pos, neg, found = [], [], [], []
    with torch.no_grad():
        for batch in batches:
            loss, _ = method(batch)
            z = functional.normalize(method.head(method.represent(batch)), dim=1)
            sim = z @ z.T
            same = batch["group"][:, None] == batch["group"][None, :]
            off = ~torch.eye(len(z), dtype=torch.bool)
            losses.append(float(loss))
            pos.append(float(sim[same & off].mean()))
            neg.append(float(sim[~same].mean()))
            nearest = sim.masked_fill(~off, -2).argmax(dim=1)
            found.append(float((batch["group"][nearest] == batch["group"]).float().mean()))
    return tuple(float(np.mean(v)) for v in (losses, pos, neg, found))


@pytest.fixture(scope="module")
def pretrained(data: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short RS3L pre-training of the tiny ParT (the fine-tuning test reuses it)."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("pretrained")
    pretrain(config(TINY, "run.epochs=16"), data, out, progress=False)
    return out / "last.pt"


def test_pretraining_lowers_loss_and_pulls_positives_together(
        data: list[Path], pretrained: Path) -> None:
    cfg = config(TINY, "run.epochs=16")
    from resim.train.loop import Runtime

    jets, cpu = open_data(data), Runtime(torch.device("cpu"))
    held_out = [b for split in ("val", "test") for b in pretrain_batches(cfg, jets, split, cpu)]
    before = build_pretraining(cfg)  # the same initial weights as the run
    loss0, pos0, neg0, found0 = latent_similarity(before, held_out)
    after = build_pretraining(cfg)
    after.load_state_dict(load_checkpoint(pretrained)["model"])
    loss1, pos1, neg1, found1 = latent_similarity(after, held_out)
    print(f"held-out NT-Xent {loss0:.3f} -> {loss1:.3f}; cos(pos) {pos0:.3f} -> {pos1:.3f}, "
          f"cos(neg) {neg0:.3f} -> {neg1:.3f}; nearest is positive {found0:.2f} -> "
          f"{found1:.2f}")
    assert loss1 < loss0 - 0.4
    assert pos1 > neg1 + 0.2  # an untrained network maps every jet to about one point
    assert pos1 - neg1 > pos0 - neg0 + 0.2
    rows = list(csv.DictReader((pretrained.parent / "metrics.csv").open()))
    train = [float(r["loss"]) for r in rows if r["split"] == "train"]
    assert np.mean(train[-5:]) < np.mean(train[:5])


def test_finetuned_encoder_tags_tops(data: list[Path], pretrained: Path,
                                     tmp_path: Path) -> None:
    ft = parse_config(FINETUNE, "ft.toml")
    result = finetune(ft, data, tmp_path / "ft", pretrained, progress=False)
    assert result.finished
    state = load_checkpoint(tmp_path / "ft" / "last.pt")
    assert state["kind"] == "finetune" and state["classes"] == {"qcd": ["q", "g"],
                                                                "top": ["top"]}
    assert state["pretrained"] == str(pretrained.resolve())
    m = evaluate(tmp_path / "ft" / "last.pt", data, tmp_path / "eval")
    val = evaluate(tmp_path / "ft" / "last.pt", data, tmp_path / "eval_val", split="val")
    print(f"top vs QCD on {m['n_jets']} test jets: AUC {m['auc']:.3f}, "
          f"accuracy {m['accuracy']:.3f}, 1/eps_B(0.5) {m['rejection_at_0.5']:.1f}; "
          f"{val['n_jets']} validation jets: AUC {val['auc']:.3f}")
    assert m["signal"] == "top" and m["class_counts"]["top"] > 20
    assert m["class_counts"]["qcd"] > 20
    # Chance is AUC 0.5 +- 0.08 on ~60 jets. For reference, a cut on the jet mass around
    # the top mass reaches 0.95 on all these jets. The tiny tagger, trained on ~400 jets,
    # got test AUC 0.84-0.89 and val 0.89-0.95, accuracy 0.75-0.77, 1/eps_B 6-18 over run
    # seeds 0-3; with 6 epochs instead of 20 it ranged from chance (0.47) to 0.87.
    assert m["auc"] > 0.8 and val["auc"] > 0.85
    assert m["accuracy"] > 0.7
    assert m["rejection_at_0.5"] > 4
    assert (tmp_path / "eval" / "roc.png").stat().st_size > 10_000
    scores = np.load(tmp_path / "eval" / "scores.npz")
    assert scores["probs"].shape == (m["n_jets"], 2)
    assert list(scores["class_names"]) == ["qcd", "top"]


def test_finetuning_a_pretrained_encoder_resumes_as_if_never_stopped(
        data: list[Path], pretrained: Path, tmp_path: Path) -> None:
    """A floating pre-trained encoder and its head train at two rates (two parameter
    groups): resuming such a run ended in a ValueError in the learning-rate schedule."""
    ft = parse_config(FINETUNE, "ft.toml", ["run.epochs=2", "data.max_jets=300"])
    full = finetune(ft, data, tmp_path / "full", pretrained, progress=False)
    assert full.position.step // 2 >= 4
    with pytest.raises(KilledError):
        finetune(ft.with_overrides(["run.checkpoint_every=2"]), data, tmp_path / "cut",
                 pretrained, progress=False, on_step=crash_at(3))
    resumed = finetune(None, None, tmp_path / "cut", resume=True, progress=False)
    assert resumed.finished and resumed.position == full.position
    a, b = load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(tmp_path / "cut" /
                                                                          "last.pt")
    assert len(a["optimizer"]["param_groups"]) == 2
    assert [g["lr"] for g in a["optimizer"]["param_groups"]] == \
        [g["lr"] for g in b["optimizer"]["param_groups"]]
    assert_same_state(a["model"], b["model"])
    assert csv_losses(tmp_path / "full" / "metrics.csv") == \
        csv_losses(tmp_path / "cut" / "metrics.csv")


def test_frozen_backbone_keeps_the_encoder(data: list[Path], pretrained: Path,
                                           tmp_path: Path) -> None:
    ft = parse_config(FINETUNE, "ft.toml", ["finetune.backbone=fixed", "run.epochs=1",
                                            "finetune.fraction=0.5"])
    finetune(ft, data, tmp_path / "ft", pretrained, progress=False)
    state = load_checkpoint(tmp_path / "ft" / "last.pt")
    tuned, original = state["model"], load_checkpoint(pretrained)["model"]
    encoder = [k for k in tuned if k.startswith("encoder.")]
    statistics = [k for k in encoder if k.endswith(("running_mean", "running_var"))]
    assert encoder and statistics
    for key in set(encoder) - set(statistics) - {k for k in encoder if "num_batches" in k}:
        assert torch.equal(tuned[key], original[key]), key  # weights untouched
    # BatchNorm statistics: calibrated on the training jets before the head trained, then
    # kept: exactly what calibrating the pre-trained encoder on those jets gives
    assert state["finetune"]["calibrated_jets"] > 100
    encoder_module = encoder_from_checkpoint(load_checkpoint(pretrained))
    calibrate_encoder(encoder_module, ft, open_data(data, {"qcd": ["q", "g"], "top": ["top"]}),
                      "lab")
    calibrated = encoder_module.state_dict()
    for key in statistics:
        name = key.removeprefix("encoder.")
        assert not torch.equal(tuned[key], original[key]), key
        assert torch.allclose(tuned[key], calibrated[name], rtol=1e-5, atol=1e-6), key
    assert not torch.equal(tuned["head.weight"], torch.zeros_like(tuned["head.weight"]))
    assert state["finetune"]["train_pooling"] is False


def test_calibrated_batchnorm_rescues_a_random_frozen_encoder(data: list[Path]) -> None:
    """A random encoder's BatchNorm statistics are (0, 1) until computed: on raw log pT and
    log E the frozen embedding is then dominated by a few features. Calibration makes its
    running statistics the training jets' feature means and variances."""
    config = parse_config(TINY, "tiny.toml", ["data.max_particles=32"])
    model = build_pretraining(config)
    jets = open_data(data)
    norm = model.encoder.embedding[0]
    assert not norm.running_mean.any() and (norm.running_var == 1).all()
    assert calibrate_encoder(model.encoder, config, jets, "lab") > 50  # nominal train jets
    batch = next(iter(labelled_jets(config, jets, "train", None, batch_size=4000)))
    x = batch["x"][batch["mask"]].double()
    # means over batches of the training jets (log pT ~ 2.2, log pT/pT_jet ~ -4)
    assert torch.allclose(norm.running_mean.double(), x.mean(0), rtol=0.03, atol=0.03)
    assert torch.allclose(norm.running_var.double(), x.var(0), rtol=0.1, atol=0.01)
    assert norm.training and norm.momentum == 0.1  # its mode and settings are restored


def test_fixed_backbone_trains_the_pooling_its_pretraining_never_ran(data: list[Path],
                                                                      tmp_path: Path) -> None:
    """MPM trains per-particle outputs only: ParT's class attention and final LayerNorm
    keep their random weights. A "fixed" backbone fine-tuned on it must train them (with
    the head) and keep every other encoder weight, BatchNorm statistics included."""
    pre = tmp_path / "mpm"
    pretrain(config(MPM, "run.epochs=1", "data.max_jets=200", "data.views.count=1"), data,
             pre, progress=False)
    original = load_checkpoint(pre / "last.pt")
    assert original["method"]["trains_pooling"] is False
    ft = parse_config(FINETUNE, "ft.toml", ["finetune.backbone=fixed", "run.epochs=1",
                                            "data.max_jets=300"])
    finetune(ft, data, tmp_path / "ft", pre / "last.pt", progress=False)
    state = load_checkpoint(tmp_path / "ft" / "last.pt")
    assert state["finetune"]["train_pooling"] is True
    pooling = ("encoder.cls_token", "encoder.cls_blocks.", "encoder.norm.")
    moved, kept = set(), set()
    statistics = ("running_mean", "running_var", "num_batches_tracked")
    for key, value in state["model"].items():
        if key.startswith("encoder.") and not key.endswith(statistics):
            (moved if not torch.equal(value, original["model"][key]) else kept).add(key)
    assert moved and all(key.startswith(pooling) for key in moved), moved
    assert {"encoder.cls_token", "encoder.norm.weight"} <= moved
    assert any(key.startswith("encoder.embedding.") for key in kept)
    assert state["finetune"]["calibrated_jets"] > 0  # BatchNorm statistics calibrated
    metrics = evaluate(tmp_path / "ft" / "last.pt", data, tmp_path / "eval")
    assert metrics["backbone"] == "fixed" and 0 <= metrics["auc"] <= 1


def test_jepa_ema_schedule_spans_the_run(data: list[Path], tmp_path: Path) -> None:
    """The loop tells JEPA the run's length: the EMA momentum reaches its end value (1.0)
    at the last step, not at an arbitrary fixed step count."""
    result = pretrain(config(JEPA, "run.epochs=2", "data.max_jets=200",
                             "data.views.count=1"), data, tmp_path / "jepa", progress=False)
    jepa = result.model
    assert jepa.total_steps == result.position.step == int(jepa.step) >= 4
    assert jepa.momentum() == 1.0
    with (tmp_path / "jepa" / "metrics.csv").open() as f:
        logged = [float(r["ema_momentum"]) for r in csv.DictReader(f) if r["split"] == "train"]
    assert logged[0] == pytest.approx(0.996) and logged == sorted(logged)
    assert 0.996 < logged[-1] < 1.0  # logged before the last step's update


def test_from_scratch_needs_an_encoder(data: list[Path], tmp_path: Path) -> None:
    with pytest.raises(RunError, match=r"--checkpoint .* \[encoder\]"):
        finetune(parse_config(FINETUNE, "ft.toml"), data, tmp_path / "ft", progress=False)
    scratch = parse_config(FINETUNE + TINY.split("[method]")[0], "ft.toml", ["run.epochs=1"])
    result = finetune(scratch, data, tmp_path / "ft", progress=False)
    assert result.finished
    assert load_checkpoint(tmp_path / "ft" / "last.pt")["pretrained"] is None
    with pytest.raises(RunError, match="not a pre-training checkpoint"):
        finetune(scratch, data, tmp_path / "ft2", tmp_path / "ft" / "last.pt", progress=False)
    with pytest.raises(RunError, match="not a fine-tuning checkpoint"):
        pretrained = tmp_path / "pt"
        pretrain(config(TINY, "run.epochs=1", "data.max_jets=100"), data, pretrained,
                 progress=False)
        evaluate(pretrained / "last.pt", data, tmp_path / "eval")


@pytest.mark.parametrize("method", ["vicreg", "rs3l with augmentations"])
def test_other_objectives_and_positives_run_through_the_loop(data: list[Path], tmp_path: Path,
                                                             method: str) -> None:
    """The loop is objective-agnostic: VICReg's terms are logged; JetCLR augmentations
    (on top of re-simulated views, or as the only positives) are a config change."""
    if method == "vicreg":
        text = TINY.replace('name = "rs3l"', 'name = "vicreg"\nexpander_dims = [32, 32]')
        extra = {"invariance", "variance", "covariance"}
    else:
        text = TINY + '\n[augment]\nnames = ["rotate", "smear"]\n[augment.smear]\n' \
                      'strength = 0.05\n'
        extra = {"nt_xent"}
    for source in ("both", "augment") if method != "vicreg" else ("resim",):
        out = tmp_path / source
        cfg = config(text, "run.epochs=1", "data.max_jets=300",
                     f"data.views.source={source}")
        result = pretrain(cfg, data, out, progress=False)
        assert result.finished and np.isfinite(result.train_loss)
        with (out / "metrics.csv").open() as f:
            assert extra <= set(next(csv.DictReader(f)))

"""What each kind of stage does: ``resim generate``, ``train``, ``probe``, ``finetune`` and
``evaluate``'s code, called with a stage's parameters.

These run in worker processes: plain arguments in, JSON-ready dicts out (the stage's
result in its record). Generation and training resume from their last commit or
checkpoint when a stage is rerun after a kill.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from resim.card import Card
from resim.train.config import load_config
from resim.train.loop import CHECKPOINT, FitResult


def run_generate(directory: Path, card: Card, card_text: str, card_copy: str,
                 split: str | None = None, **_: Any) -> dict[str, Any]:
    """Generate (or resume) the shard ``card`` describes; ``split``: mark the whole file
    as that split."""
    import h5py

    from resim.generate import generate
    from resim.store import parts_dir

    Path(card_copy).parent.mkdir(parents=True, exist_ok=True)
    Path(card_copy).write_text(card_text)
    output = card.run.output
    resume = output.exists() or parts_dir(output).exists()
    if split and output.is_file():  # a marked file is complete (and resume would refuse it)
        with h5py.File(output, "r") as f:
            resume = f.attrs.get("split") != split
    s = generate(card, resume=resume, progress=False) if resume or not output.exists() \
        else None
    if split:  # all of this file is one split (as resim convert --split marks files)
        with h5py.File(output, "r+") as f:
            f.attrs["split"] = split
    if s is None:
        from resim.dataset import JetDataset

        summary = JetDataset(output).summary
        return {"file": str(output), "events": summary.get("events"), "split": split}
    return {"file": str(output), "events": s.events, "groups": s.groups, "jets": s.jets,
            "variations": s.variations, "labels": s.labels, "failed": s.failed,
            "lost": s.lost, "generate_seconds": round(s.seconds, 1), "split": split}


def _fit_summary(result: FitResult) -> dict[str, Any]:
    return {"epochs": result.position.epoch, "steps": result.position.step,
            "train_loss": result.train_loss, "val_loss": result.val_loss,
            "jets_per_s": result.jets_per_s}


def run_pretrain(directory: Path, config: str, overrides: list[str], data: list[str],
                 **_: Any) -> dict[str, Any]:
    from resim.train.pretrain import pretrain

    cfg = load_config(config, overrides)
    resume = (directory / CHECKPOINT).is_file()
    result = pretrain(None if resume else cfg, data, directory, resume=resume,
                      overwrite=not resume, progress=False)
    return _fit_summary(result)


def run_finetune(directory: Path, config: str, overrides: list[str], data: list[str],
                 checkpoint: str | None, min_steps: int, fraction: float,
                 **_: Any) -> dict[str, Any]:
    from resim.train.finetune import finetune
    from resim.train.loop import load_checkpoint

    cfg = load_config(config, overrides)
    resume = (directory / CHECKPOINT).is_file()
    if not resume:
        cfg = cfg.with_overrides([f"run.epochs={_epochs(cfg, data, fraction, min_steps)}"])
    result = finetune(None if resume else cfg, data, directory, checkpoint if not resume
                      else None, resume=resume, overwrite=not resume, progress=False)
    data_record = load_checkpoint(directory / CHECKPOINT).get("data")
    n_train_jets = data_record.get("n_train_jets") if data_record is not None else None
    return {**_fit_summary(result), "n_train_jets": n_train_jets}


def _epochs(cfg: Any, data: list[str], fraction: float, min_steps: int) -> int:
    """Enough epochs for ``min_steps`` optimiser steps at this labelled fraction."""
    from resim.train.finetune import class_mapping, labelled_jets
    from resim.train.pretrain import open_data

    jets = open_data(data, class_mapping(cfg, open_data(data).labels))
    steps = len(labelled_jets(cfg, jets, "train", None, fraction=fraction, shuffle=True))
    return max(cfg.run.epochs, math.ceil(min_steps / max(steps, 1)))


def run_probe(directory: Path, checkpoint: str, data: list[str],
              classes: dict[str, list[str]], **_: Any) -> dict[str, Any]:
    from resim.train.probe import probe

    result = probe(checkpoint, data, directory, classes=classes, overwrite=True)
    return {name: {"linear_auc": result[name]["linear_auc"],
                   "knn_20": (result[name]["knn_accuracy"] or {}).get("20"),
                   "effective_rank": result[name]["effective_rank"],
                   "r2_abs_eta": result[name]["r2"]["abs_eta"]}
            for name in ("encoder", "baseline")}


def run_evaluate(directory: Path, checkpoint: str, data: list[str], split: str,
                 reference: str, bins: int | None = None, **_: Any) -> dict[str, Any]:
    from resim.train import evaluate as ev

    metrics = ev.evaluate(checkpoint, data, directory / "nominal", split=split,
                          overwrite=True)
    shutil.rmtree(directory / "shift", ignore_errors=True)  # a killed earlier attempt's
    shift = ev.evaluate_shift(checkpoint, data, directory / "shift", reference=reference,
                              split=split, bins=bins)
    return {"n_jets": metrics["n_jets"], "accuracy": metrics["accuracy"],
            "auc": metrics["auc"],
            "js_mean": {v: r.get("js_distance_mean") for v, r in shift["variations"].items()
                        if v != reference}}


RUNNERS: dict[str, Callable[..., dict[str, Any]]] = {
    "generate": run_generate, "pretrain": run_pretrain, "probe": run_probe,
    "finetune": run_finetune, "evaluate": run_evaluate,
}


def run_stage(kind: str, directory: str, params: dict[str, Any],
              threads: int) -> dict[str, Any]:
    """Do one stage (in whatever process calls it); returns its result and run time."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    start = time.perf_counter()
    result = RUNNERS[kind](Path(directory), **params)
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


__all__ = ["RUNNERS", "run_evaluate", "run_finetune", "run_generate", "run_pretrain",
           "run_probe", "run_stage"]

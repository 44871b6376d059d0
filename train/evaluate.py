"""Evaluation (``resim evaluate``): a fine-tuned classifier on the test split of some data.

Writes into the output directory

* ``metrics.json``: ``accuracy``, ``auc``, ``rejection_at_0.3``, ``rejection_at_0.5``
  (1/eps_B at that signal efficiency) and the rest of
  :func:`resim.train.metrics.classification_metrics` (per class pair for more than two
  classes, with the top-level numbers their mean unless a signal class is named), plus
  what was evaluated (checkpoint, data, split, variations, number of jets);
* ``roc.png``: background rejection against signal efficiency, one curve per class pair;
* ``scores.npz``: the raw outputs (``probs``, ``labels``, ``variation``, ``group``, and
  the ``class_names`` / ``variation_names`` they index), for further study.

The pieces are separate so robustness studies can reuse them: :func:`predict` gives the
outputs of any batches with their variation codes, and :func:`summarise` turns outputs
into the metrics dict.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .config import parse_config
from .finetune import Classifier, classifier_from_checkpoint, labelled_jets
from .loop import RunError, load_checkpoint
from .metrics import classification_metrics, plot_roc, roc_curves
from .pretrain import Paths, open_data

OUTPUTS = ("metrics.json", "roc.png", "scores.npz")


@dataclass(frozen=True)
class Predictions:
    """Classifier outputs on a set of jets: ``probs`` (N, C) and per-jet codes."""

    probs: np.ndarray
    labels: np.ndarray
    variation: np.ndarray
    group: np.ndarray
    class_names: tuple[str, ...]
    variation_names: tuple[str, ...]

    def select(self, variation: str) -> Predictions:
        """The jets of one variation."""
        keep = self.variation == self.variation_names.index(variation)
        return Predictions(self.probs[keep], self.labels[keep], self.variation[keep],
                           self.group[keep], self.class_names, self.variation_names)


def predict(model: Classifier, batches: Iterable[dict[str, Tensor]],
            device: torch.device | str = "cpu") -> dict[str, np.ndarray]:
    """``probs``, ``labels``, ``variation``, ``group`` arrays over all ``batches``."""
    model.eval().to(device)
    out: dict[str, list[np.ndarray]] = {"probs": [], "labels": [], "variation": [], "group": []}
    for batch in batches:
        moved = {k: v.to(device) for k, v in batch.items()}
        out["probs"].append(model.probabilities(moved).cpu().double().numpy())
        out["labels"].append(batch["label"].numpy())
        out["variation"].append(batch["variation"].numpy())
        out["group"].append(batch["group"].numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def summarise(p: Predictions, signal: str | None = None) -> dict[str, Any]:
    """The metrics dict of ``p`` (see :func:`resim.train.metrics.classification_metrics`)."""
    try:
        return classification_metrics(p.probs, p.labels, p.class_names, signal=signal)
    except (KeyError, ValueError) as err:
        raise RunError(f"metrics: {err}") from None


def evaluate(
    checkpoint: str | Path,
    data: Paths,
    output: str | Path,
    *,
    split: str = "test",
    variations: str | Sequence[str] | None = None,
    signal: str | None = None,
    max_jets: int | None = None,
    batch_size: int | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Evaluate the fine-tuned ``checkpoint`` on ``split`` of ``data``; write into ``output``.

    ``variations`` default to those the classifier was fine-tuned on (``data.variations``
    of its config: nominal unless set). Returns the metrics dict written to metrics.json.
    """
    output = Path(output)
    existing = [name for name in OUTPUTS if (output / name).exists()]
    if existing and not overwrite:
        raise RunError(f"{output} holds an evaluation ({', '.join(existing)}); pass "
                       "--overwrite to replace it")
    state = load_checkpoint(checkpoint)
    model = classifier_from_checkpoint(state)
    stored = state["config"]
    config = parse_config(stored["text"], stored["source"], stored["overrides"])
    if max_jets is not None:
        config = config.with_overrides([f"data.max_jets={max_jets}"])
    if config.run.threads:
        torch.set_num_threads(config.run.threads)
    classes = state["classes"]
    jets = open_data(data, classes)
    dataset = labelled_jets(config, jets, split, None, variations=variations,
                            batch_size=batch_size)
    raw = predict(model, dataset)
    p = Predictions(**raw, class_names=tuple(classes), variation_names=tuple(jets.variations))

    metrics = summarise(p, signal)
    metrics.update({
        "checkpoint": str(Path(checkpoint).resolve()),
        "data": [str(Path(d).resolve()) for d in data],
        "split": split,
        "variations": list(dataset.variation_names),
        "pretrained": state.get("pretrained"),
        "backbone": state["finetune"]["backbone"],
        "fraction": state["finetune"]["fraction"],
    })
    output.mkdir(parents=True, exist_ok=True)
    (output / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    curves = roc_curves(p.probs, p.labels, p.class_names, signal=signal)
    where = Path(checkpoint).resolve()
    plot_roc(curves, output / "roc.png", title=f"{where.parent.name}/{where.name}: {split} "
             f"split, {len(p.labels)} jets")
    np.savez_compressed(output / "scores.npz", **raw, class_names=np.array(p.class_names),
                        variation_names=np.array(p.variation_names))
    return metrics


__all__ = ["Predictions", "evaluate", "predict", "summarise"]

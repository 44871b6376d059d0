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

Robustness (``resim evaluate --shift``, :func:`evaluate_shift`): the same classifier on
every variation of the same split, i.e. the same hard-process objects re-simulated with
another shower, seed or hadronization: per variation the metrics and their change with
respect to a reference variation (the one fine-tuned on, nominal by default), and the
Jensen-Shannon distance between the classifier's output distributions on the variation
and on the reference, RS3L's measure of simulator dependence ("uncertainty mitigation",
arXiv 2403.07066). Writes ``shift.json`` (:func:`resim.train.metrics.shift_metrics`'
layout plus what was evaluated) and ``shift.png`` (output distributions per variation).
Each variation is evaluated on all of its jets in the split: a group whose jet in some
variation failed the jet selection is missing there only (``n_groups`` and
``groups_with_reference`` say how many), as in separately simulated samples.

The pieces are separate so robustness studies can reuse them: :func:`predict` gives the
outputs of any batches with their variation codes, and :func:`summarise` turns outputs
into the metrics dict.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .checkpoint import Checkpoint
from .config import Config, parse_config
from .finetune import Classifier, classifier_from_checkpoint, labelled_jets
from .loop import RunError, load_checkpoint
from .metrics import (
    classification_metrics,
    plot_output_distributions,
    plot_roc,
    roc_curves,
    shift_metrics,
)
from .pretrain import Paths, checkpoint_features, open_data

OUTPUTS = ("metrics.json", "roc.png", "scores.npz")
SHIFT_OUTPUTS = ("shift.json", "shift.png")


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


def _refuse_existing(output: Path, names: Sequence[str], what: str, overwrite: bool) -> None:
    existing = [name for name in names if (output / name).exists()]
    if existing and not overwrite:
        raise RunError(f"{output} holds {what} ({', '.join(existing)}); pass --overwrite to "
                       "replace it")


def _load_classifier(checkpoint: str | Path, max_jets: int | None
                     ) -> tuple[Checkpoint, Classifier, Config]:
    """The checkpoint, its classifier (evaluation mode) and its config (``max_jets`` applied)."""
    state = load_checkpoint(checkpoint)
    try:
        model = classifier_from_checkpoint(state)
    except RunError as err:
        raise RunError(f"{checkpoint}: {err}") from None
    stored = state["config"]
    config = parse_config(stored["text"], stored["source"], stored["overrides"])
    if max_jets is not None:
        config = config.with_overrides([f"data.max_jets={max_jets}"])
    if config.run.threads:
        torch.set_num_threads(config.run.threads)
    return state, model, config


def _description(state: Checkpoint, checkpoint: str | Path, data: Paths,
                 split: str) -> dict[str, Any]:
    """What was evaluated, for the JSON files."""
    return {
        "checkpoint": str(Path(checkpoint).resolve()),
        "data": [str(Path(d).resolve()) for d in data],
        "split": split,
        "pretrained": state.get("pretrained"),
        "backbone": state["finetune"]["backbone"],
        "fraction": state["finetune"]["fraction"],
    }


def background_counts(metrics: dict[str, Any], signal: str | None) -> dict[str, int]:
    """Background jets behind each ROC curve of :func:`resim.train.metrics.roc_curves`
    (for the lower bound ``plot_roc`` draws where none passes)."""
    counts = {name: pair["n_background"] for name, pair in metrics["pairs"].items()}
    if signal is not None and len(metrics["class_names"]) > 2:
        counts[f"{signal}_vs_all"] = metrics["n_jets"] - metrics["class_counts"][signal]
    return counts


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
    _refuse_existing(output, OUTPUTS, "an evaluation", overwrite)
    state, model, config = _load_classifier(checkpoint, max_jets)
    classes = state["classes"]
    jets = open_data(data, classes, level=config.data.level)
    dataset = labelled_jets(config, jets, split, None, variations=variations,
                            batch_size=batch_size, features=checkpoint_features(state),
                            frame=state["encoder"].get("frame", "lab"))
    raw = predict(model, dataset)
    p = Predictions(**raw, class_names=tuple(classes), variation_names=tuple(jets.variations))

    metrics = summarise(p, signal)
    description = _description(state, checkpoint, data, split)
    metrics.update({**description, "variations": list(dataset.variation_names)})
    output.mkdir(parents=True, exist_ok=True)
    (output / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    curves = roc_curves(p.probs, p.labels, p.class_names, signal=signal)
    where = Path(checkpoint).resolve()
    plot_roc(curves, output / "roc.png", title=f"{where.parent.name}/{where.name}: {split} "
             f"split, {len(p.labels)} jets", n_background=background_counts(metrics, signal))
    # numpy's stubs let a ** dict fill its allow_pickle flag; raw's keys are predict()'s.
    np.savez_compressed(output / "scores.npz", **raw,  # type: ignore[arg-type]
                        class_names=np.array(p.class_names),
                        variation_names=np.array(p.variation_names))
    return metrics


def trained_variations(state: Checkpoint) -> list[str]:
    """The variations a fine-tuning checkpoint was trained on."""
    stored = state["data"].get("trained_on")
    if stored is not None:
        return list(stored)
    names = state["config"]["effective"]["data"]["variations"]  # older checkpoints
    if not names:
        return ["nominal"]
    return list(state["data"]["variations"]) if list(names) == ["all"] else list(names)


def auto_bins(n_jets: int) -> int:
    """Histogram bins for JS distances between samples of ``n_jets``: the square-root rule,
    between 5 and 50.

    Two samples of N jets from one distribution differ by a JS distance of about
    sqrt(bins / (8 N ln 2)) from counting noise alone; with sqrt(N) bins that floor falls
    as N^(-1/4) (0.13 for 100 jets, 0.08 for 1000), where 50 fixed bins would bury a
    small test set's shifts under it (0.55 for 30 jets).
    """
    return int(min(50, max(5, round(math.sqrt(max(n_jets, 1))))))


def evaluate_shift(
    checkpoint: str | Path,
    data: Paths,
    output: str | Path,
    *,
    reference: str = "nominal",
    split: str = "test",
    max_jets: int | None = None,
    signal: str | None = None,
    bins: int | None = None,
    batch_size: int | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """The fine-tuned ``checkpoint`` on every variation of ``split`` of ``data``, compared
    with the ``reference`` variation; writes ``shift.json`` and ``shift.png`` in ``output``.

    Returns :func:`resim.train.metrics.shift_metrics`' dict (``reference``,
    ``class_names``, ``bin_edges``, ``definition``, and per variation ``metrics``,
    ``delta``, ``relative_delta``, ``js_distance`` per class, ``js_distance_mean``,
    ``wasserstein``; here also ``n_groups`` and ``groups_with_reference``), with what was
    evaluated: ``checkpoint``, ``data``, ``split``, ``trained_on`` (the fine-tuning
    variations), ``pretrained``, ``backbone``, ``fraction``. ``max_jets`` caps the jets
    read, all variations together (whole groups, as ``data.max_jets``); ``signal`` as in
    :func:`evaluate`. The reference must be a variation of the data with jets in the split.
    ``bins``: uniform bins on [0, 1] of the output histograms behind the JS distances;
    default :func:`auto_bins` of the reference's smallest class.
    """
    output = Path(output)
    _refuse_existing(output, SHIFT_OUTPUTS, "a shift evaluation", overwrite)
    state, model, config = _load_classifier(checkpoint, max_jets)
    classes = state["classes"]
    jets = open_data(data, classes, level=config.data.level)
    if reference not in jets.variations:
        raise RunError(f"reference variation {reference!r} is not in the data (it has "
                       f"{', '.join(jets.variations)})")
    if signal is not None and signal not in classes:
        raise RunError(f"signal {signal!r} is not a class of the classifier (classes: "
                       f"{', '.join(classes)})")
    dataset = labelled_jets(config, jets, split, None, variations="all",
                            batch_size=batch_size, features=checkpoint_features(state),
                            frame=state["encoder"].get("frame", "lab"))
    p = Predictions(**predict(model, dataset), class_names=tuple(classes),
                    variation_names=tuple(jets.variations))
    present = [v for k, v in enumerate(jets.variations) if (p.variation == k).any()]
    if reference not in present:
        raise RunError(f"the {split} split holds no jet of the reference variation "
                       f"{reference!r} (variations there: {', '.join(present)})")
    per_variation = {v: (p.select(v).probs, p.select(v).labels) for v in present}
    if bins is None:
        counts = np.bincount(per_variation[reference][1], minlength=len(classes))
        bins = auto_bins(int(counts[counts > 0].min()))
    elif isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise RunError(f"bins must be a positive integer, got {bins!r}")
    try:
        shift = shift_metrics(per_variation, reference, list(classes), signal=signal,
                              bins=bins)
    except (KeyError, ValueError) as err:
        raise RunError(f"shift: {err}") from None
    reference_groups = np.unique(p.select(reference).group)
    for v in present:
        groups = np.unique(p.select(v).group)
        shift["variations"][v]["n_groups"] = int(groups.size)
        shift["variations"][v]["groups_with_reference"] = int(
            np.isin(groups, reference_groups).sum())
    result = {**_description(state, checkpoint, data, split),
              "trained_on": trained_variations(state), **shift}

    output.mkdir(parents=True, exist_ok=True)
    (output / "shift.json").write_text(json.dumps(result, indent=1) + "\n")
    where = Path(checkpoint).resolve()
    plot_output_distributions(
        per_variation, output / "shift.png", list(classes), reference=reference,
        signal=signal, bins=shift["bin_edges"],
        title=f"{where.parent.name}/{where.name} (fine-tuned on "
              f"{', '.join(result['trained_on'])}): {split} split")
    return result


def _number(value: float | None, digits: int, bound: bool = False) -> str:
    if value is None:
        return "n/a"
    return (">=" if bound else "") + f"{value:.{digits}f}"


def format_shift_table(result: dict[str, Any]) -> str:
    """A plain-text table of :func:`evaluate_shift`'s result: per variation the jets, the
    metrics with their change from the reference (rejections: relative change, none
    where a rejection is a lower bound, ">="), and the JS distance of each class's output
    distribution to the reference's."""
    reference, classes = result["reference"], result["class_names"]
    working = _working_points(next(iter(result["variations"].values()))["metrics"])
    head = ["variation", "jets", "accuracy", "AUC",
            *(f"1/eps_B@{w}" for w in working), *(f"JS {c}" for c in classes)]
    ref_metrics = result["variations"][reference]["metrics"]
    rows = [_shift_row(name, v, name == reference, ref_metrics, working, classes)
            for name, v in result["variations"].items()]
    widths = [max(len(str(x)) for x in column) for column in zip(head, *rows, strict=True)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)).rstrip()
             for line in (head, *rows)]
    definition = ref_metrics.get("definition")
    notes = [f"{result['split']} split; metrics: {definition}",
             f"(changes) relative to {reference!r}; JS: Jensen-Shannon distance (0 "
             f"identical, 1 disjoint) of each class's output distribution to {reference!r}'s"]
    return "\n".join([*lines, *notes])


def _working_points(metrics: dict[str, Any]) -> list[str]:
    """The signal efficiencies of a metrics dict's rejections (``rejection_at_<eff>``)."""
    return [k.removeprefix("rejection_at_") for k in metrics
            if k.startswith("rejection_at_") and not k.endswith("_is_lower_bound")]


def _shift_row(name: str, v: dict[str, Any], is_ref: bool, ref_metrics: dict[str, Any],
               working: Sequence[str], classes: Sequence[str]) -> list[str]:
    """One variation's cells of :func:`format_shift_table`."""
    m, d, r = v["metrics"], v["delta"], v["relative_delta"]
    cells = [name + (" (ref)" if is_ref else ""), str(m["n_jets"])]
    for key, digits in (("accuracy", 3), ("auc", 4)):
        change = None if is_ref else d[key]
        cells.append(_number(m[key], digits) +
                     (f" ({change:+.{digits}f})" if change is not None else ""))
    cells += [_rejection_cell(f"rejection_at_{w}", m, r, is_ref, ref_metrics) for w in working]
    cells += ["-" if is_ref else _number(v["js_distance"][c], 3) for c in classes]
    return cells


def _rejection_cell(key: str, m: dict[str, Any], relative: dict[str, Any], is_ref: bool,
                    ref_metrics: dict[str, Any]) -> str:
    """A rejection, ``>=`` where it is a lower bound, with its relative change (none
    between lower bounds: no background jet passing says nothing)."""
    bound = m[f"{key}_is_lower_bound"]
    shown = not (is_ref or relative[key] is None or bound
                 or ref_metrics[f"{key}_is_lower_bound"])
    return _number(m[key], 1, bound) + (f" ({100 * relative[key]:+.0f} %)" if shown else "")


__all__ = ["Predictions", "evaluate", "evaluate_shift", "format_shift_table", "predict",
           "summarise"]

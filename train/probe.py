"""``resim probe``: what a pre-trained encoder's frozen representation knows, against the
same network at its random initialisation.

For a pre-training checkpoint, on its own splits and input settings (``data.splits``,
``max_particles``, frame), the encoder and a *baseline* (the same config built again from
``run.seed``: the very weights the run started from) each embed

* the training split's nominal jets: the kNN memory and the linear probes' training set;
* the test split's nominal jets: the kNN queries, the probes' test set, uniformity;
* the test split's jets of every variation: alignment over the realizations of a group.

Both networks' BatchNorm statistics are calibrated on the training jets first (a random
encoder's were never computed). What the representation is depends on the objective
(``Method.represent``: ParT's class-attention output; for MPM and JEPA, which never train
that pooling, the mean of the per-particle outputs). The numbers
(:mod:`resim.train.diagnostics`) go to ``DIR/probe.json``::

    {"encoder": {...}, "baseline": {...}, "labelled": true, "classes": {...}, ...}

each holding ``knn_accuracy`` ({5, 10, 20}), ``linear_auc``, ``linear_accuracy``,
``effective_rank``, ``alignment``, ``uniformity`` and ``r2`` = {``abs_eta``, ``log_pt``,
``mass``, ``n_constituents``} (jet quantities of all constituents, linear fits trained on
the training jets, scored on the test jets). Data with fewer than two classes get the
label-free numbers only (``labelled: false`` and a ``note`` saying so). ``DIR/probe.png``
shows a 2-d projection of both embeddings (principal components, coloured by class) and
the numbers side by side.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .checkpoint import Checkpoint
from .config import Config, parse_config
from .diagnostics import (
    KS,
    alignment,
    effective_rank,
    knn_accuracy,
    linear_probe,
    linear_r2,
    uniformity,
)
from .features import feature_names
from .finetune import calibrate_batchnorm, labelled_jets
from .loop import RunError, load_checkpoint
from .methods import Method
from .pretrain import Paths, build_pretraining, checkpoint_features, open_data

OUTPUTS = ("probe.json", "probe.png")
TARGETS = ("abs_eta", "log_pt", "mass", "n_constituents")


@dataclass
class Embedded:
    """Embeddings of a set of jets with what the probes need about each jet."""

    z: np.ndarray
    label: np.ndarray
    group: np.ndarray
    variation: np.ndarray
    targets: dict[str, np.ndarray]


@torch.no_grad()
def embed(represent: Callable[[dict[str, Tensor]], Tensor],
          batches: Iterable[dict[str, Tensor]]) -> dict[str, np.ndarray]:
    """``z`` (N, D) and the jets' ``label``, ``group``, ``variation`` over ``batches``."""
    out: dict[str, list[np.ndarray]] = {"z": [], "label": [], "group": [], "variation": []}
    for batch in batches:
        out["z"].append(represent(batch).float().numpy())
        for key in ("label", "group", "variation"):
            out[key].append(batch[key].numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def jet_quantities(data: Any, rows: np.ndarray) -> dict[str, np.ndarray]:
    """|η|, log pT, mass (GeV) of the 4-vector sum of all constituents, and their
    number, for the jets ``rows`` of a :class:`~resim.train.data.JetData`."""
    counts = data.jet_count[rows]
    p4 = data.particles(rows, max(int(counts.max()), 1)).jet_p4()
    px, py, pz, e = p4.T
    pt = np.hypot(px, py)
    eta = np.arcsinh(pz / np.maximum(pt, 1e-12))
    mass = np.sqrt(np.maximum(e * e - px * px - py * py - pz * pz, 0.0))
    return {"abs_eta": np.abs(eta), "log_pt": np.log(np.maximum(pt, 1e-12)), "mass": mass,
            "n_constituents": counts.astype(np.float64)}


def probe_numbers(train: Embedded, test: Embedded, grouped: Embedded,
                  class_names: Sequence[str], labelled: bool) -> dict[str, Any]:
    """Every number of ``probe.json`` for one network (see the module docstring)."""
    out: dict[str, Any] = {"knn_accuracy": None, "linear_auc": None, "linear_accuracy": None}
    if labelled:
        knn = knn_accuracy(train.z, train.label, test.z, test.label, KS)
        linear = linear_probe(train.z, train.label, test.z, test.label, class_names)
        out.update(knn_accuracy={str(k): v for k, v in knn.items()},
                   linear_auc=linear["auc"], linear_accuracy=linear["accuracy"])
    out["effective_rank"] = effective_rank(test.z)
    out["alignment"] = alignment(grouped.z, grouped.group) if \
        len(np.unique(grouped.group)) < len(grouped.group) else None
    out["uniformity"] = uniformity(test.z)
    out["r2"] = {name: linear_r2(train.z, train.targets[name], test.z, test.targets[name])
                 for name in TARGETS}
    out["embed_dim"] = int(train.z.shape[1])
    return out


def _state_config(state: Checkpoint) -> Config:
    stored = state["config"]
    return parse_config(stored["text"], stored["source"], stored["overrides"])


def _networks(state: Checkpoint) -> tuple[Method, Method, Config]:
    """The checkpoint's pre-trained method and the same config at its initial weights."""
    config = _state_config(state)
    n_features = len(checkpoint_features(state))
    baseline = build_pretraining(config, n_features)  # seeded by run.seed: its start
    trained = build_pretraining(config, n_features)
    trained.load_state_dict(state["model"])
    return trained.eval(), baseline.eval(), config


def _sets(config: Config, data: Any, features: Sequence[str], frame: str,
          max_jets: int | None) -> dict[str, Any]:
    """The three jet sets of the module docstring, as LabelledJets."""
    if max_jets is not None:
        config = config.with_overrides([f"data.max_jets={max_jets}"])
    return {
        name: labelled_jets(config, data, split, None, variations=variations, batch_size=500,
                            features=features, frame=frame)
        for name, split, variations in (("train", "train", "nominal"),
                                        ("test", "test", "nominal"), ("grouped", "test", "all"))
    }


def _embedded(method: Method, dataset: Any) -> Embedded:
    raw = embed(method.represent, dataset)
    return Embedded(raw["z"], raw["label"], raw["group"], raw["variation"],
                    jet_quantities(dataset.data, dataset.rows))


def calibrate(method: Method, dataset: Any, batches: int = 20) -> int:
    """Calibrate ``method``'s BatchNorm statistics on (at most ``batches`` of) ``dataset``."""
    from itertools import islice

    return calibrate_batchnorm(method.encoder, method.represent,
                               islice(iter(dataset), batches))


def probe_checkpoint(checkpoint: str | Path, data: Paths,
                     classes: Mapping[str, Sequence[str]] | None = None,
                     max_jets: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The probe of a pre-training ``checkpoint`` on ``data`` (the dict of probe.json) and
    the test embeddings of both networks (for the plot)."""
    state = load_checkpoint(checkpoint)
    if state.get("kind") != "pretrain":
        raise RunError(f"{checkpoint}: not a pre-training checkpoint (kind "
                       f"{state.get('kind')!r}); probe the output of resim train")
    trained, baseline, config = _networks(state)
    if config.run.threads:
        torch.set_num_threads(config.run.threads)
    level = config.data.level
    labels = open_data(data, level=level).labels
    mapping = {k: list(v) for k, v in classes.items()} if classes else \
        {label: [label] for label in labels}
    jets = open_data(data, mapping, level=level)
    frame = state["encoder"].get("frame", "lab")
    sets = _sets(config, jets, checkpoint_features(state), frame, max_jets)
    for name, split in (("train", "train"), ("test", "test")):
        if len(sets[name].rows) < 2:  # no spread to measure a rank or fit a line on
            raise RunError(f"{split} split: {len(sets[name].rows)} nominal jet of the classes "
                           f"({', '.join(mapping)}); the probe needs two or more (more data, "
                           "or other --classes)")
    present = [np.unique(jets.group_class[jets.jet_group(sets[s].rows)])
               for s in ("train", "test")]
    labelled = min(len(p) for p in present) >= 2
    result: dict[str, Any] = {}
    embeddings: dict[str, Any] = {}
    for name, method in (("encoder", trained), ("baseline", baseline)):
        calibrate(method, sets["train"])
        e = {k: _embedded(method, d) for k, d in sets.items()}
        result[name] = probe_numbers(e["train"], e["test"], e["grouped"], list(mapping),
                                     labelled)
        embeddings[name] = e["test"]
    result.update({
        "checkpoint": str(Path(checkpoint).resolve()),
        "data": [str(Path(d).resolve()) for d in data],
        "method": state["method"]["name"], "encoder_name": state["encoder"]["name"],
        "frame": frame, "steps": state["position"]["step"],
        "classes": mapping, "labelled": labelled,
        "n_jets": {k: len(d.rows) for k, d in sets.items()},
        "splits": list(config.data.splits),
        "baseline_is": f"the same config at its initial weights (run.seed = {config.run.seed})",
    })
    if not labelled:
        result["note"] = ("fewer than two classes in the train or test split: kNN and linear "
                          "probes need labels, so only the label-free numbers (effective rank, "
                          "alignment, uniformity, R²) are given")
    return result, embeddings


def probe(checkpoint: str | Path, data: Paths, output: str | Path, *,
          classes: Mapping[str, Sequence[str]] | None = None, max_jets: int | None = None,
          overwrite: bool = False) -> dict[str, Any]:
    """Probe ``checkpoint`` on ``data``; write ``probe.json`` and ``probe.png`` into
    ``output``; return the dict written."""
    output = Path(output)
    existing = [n for n in OUTPUTS if (output / n).exists()]
    if existing and not overwrite:
        raise RunError(f"{output} holds a probe ({', '.join(existing)}); pass --overwrite to "
                       "replace it")
    if not data:
        raise RunError("give at least one data file (--data)")
    result, embeddings = probe_checkpoint(checkpoint, data, classes, max_jets)
    output.mkdir(parents=True, exist_ok=True)
    (output / "probe.json").write_text(json.dumps(result, indent=1) + "\n")
    plot_probe(result, embeddings, output / "probe.png")
    return result


# --------------------------------------------------------------------------- monitoring


def validation_monitor(config: Config, data: Any) -> Callable[[Method], dict[str, float]] | None:
    """What ``resim train`` measures every ``run.monitor_every`` epochs: on the validation
    split's nominal jets (every label a class; labels used for nothing else), the
    leave-one-out kNN accuracy (k = 20, memory: the other validation jets) and the
    effective rank of the representation, as the model is (no calibration). None when the
    validation split has no jets."""
    if not config.run.monitor_every or config.data.splits[1] <= 0:
        return None
    try:
        dataset = labelled_jets(config, data, "val", None, variations="nominal",
                                batch_size=500, features=feature_names(data.level),
                                frame=config.data.frame)
    except RunError:
        return None
    labels = data.group_class[data.jet_group(dataset.rows)]
    labelled = len(np.unique(labels)) >= 2 and len(labels) > 20

    def monitor(method: Method) -> dict[str, float]:
        was_training = method.training
        method.eval()
        try:
            raw = embed(method.represent, dataset)
        finally:
            method.train(was_training)
        out = {"effective_rank": effective_rank(raw["z"])}
        if labelled:
            itself = np.eye(len(raw["z"]), dtype=bool)
            out["knn_accuracy"] = knn_accuracy(raw["z"], raw["label"], raw["z"], raw["label"],
                                               (20,), exclude=itself)[20]
        return out

    return monitor


# --------------------------------------------------------------------------- the plot

ROWS = (("kNN accuracy (k = 20)", lambda r: (r["knn_accuracy"] or {}).get("20")),
        ("linear probe AUC", lambda r: r["linear_auc"]),
        ("linear probe accuracy", lambda r: r["linear_accuracy"]),
        ("effective rank", lambda r: r["effective_rank"]),
        ("alignment (lower: views closer)", lambda r: r["alignment"]),
        ("uniformity (lower: more even)", lambda r: r["uniformity"]),
        *((f"R² {name} (shortcut)" if name in ("abs_eta", "log_pt") else f"R² {name}",
           lambda r, name=name: r["r2"][name]) for name in TARGETS))


def summary_lines(result: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(quantity, encoder, baseline) rows of the probe's numbers, as text."""
    def text(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    return [(name, text(get(result["encoder"])), text(get(result["baseline"])))
            for name, get in ROWS]


def plot_probe(result: Mapping[str, Any], embeddings: Mapping[str, Embedded],
               path: Path) -> None:
    """Two principal-component projections (encoder, baseline) coloured by class, and the
    table of numbers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = list(result["classes"])
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.2),
                             gridspec_kw={"width_ratios": [1, 1, 1.15]})
    for ax, name in zip(axes[:2], ("encoder", "baseline"), strict=True):
        e = embeddings[name]
        z = e.z - e.z.mean(axis=0)
        _, s, vt = np.linalg.svd(z, full_matrices=False)
        xy = z @ vt[:2].T
        share = (s[:2] ** 2).sum() / max((s ** 2).sum(), 1e-12)
        for k, cls in enumerate(classes):
            keep = e.label == k
            ax.scatter(xy[keep, 0], xy[keep, 1], s=5, alpha=0.5, label=cls)
        title = "pre-trained encoder" if name == "encoder" else "same network, random init"
        ax.set_title(f"{title}\n(first two principal components: {100 * share:.0f} % of "
                     "the variance)", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(markerscale=3, fontsize=9)
    ax = axes[2]
    ax.axis("off")
    table = ax.table(cellText=[list(r) for r in summary_lines(result)],
                     colLabels=["test split, nominal jets", "encoder", "random init"],
                     loc="center", cellLoc="left", colWidths=[0.58, 0.21, 0.21])
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    table.scale(1, 1.35)
    note = "" if result["labelled"] else "\nno labels: kNN and linear probes not available"
    ax.set_title(f"{result['method']} ({result['encoder_name']}, {result['steps']} steps, "
                 f"frame {result['frame']})\n{result['n_jets']['test']} test jets"
                 f"{note}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


__all__ = ["Embedded", "embed", "jet_quantities", "probe", "probe_checkpoint",
           "probe_numbers", "validation_monitor"]

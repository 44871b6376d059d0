"""The report of a ``resim study``: a Markdown file with tables and plots from its stages.

Reads what the stages wrote (``stage.json`` records, ``evaluate/*/nominal/metrics.json``
and ``scores.npz``, ``evaluate/*/shift/shift.json``, ``probe/*/probe.json``) and writes
``report.md`` with its figures (PNGs) in a folder of the same stem beside it, and the
numbers as ``results.json``. The uncertainties are those of :mod:`resim.study.statistics`.
A hand-written discussion between the report's ``<!-- discussion -->`` markers is kept
when the report is written again.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .findings import findings
from .plots import plot_robustness, plot_rocs, plot_vs_fraction, roc_pairs
from .spec import Study
from .stages import Stage
from .statistics import ResultTable, Robustness, RunKey, robustness
from .tables import (
    ProbeKey,
    data_sizes,
    main_table,
    pair_table,
    pct_label,
    probe_table,
    robustness_table,
    row,
    timing_table,
)

DISCUSSION = re.compile(r"<!-- discussion -->\n(.*?)<!-- /discussion -->", re.S)
NO_DISCUSSION = ("*(What the study shows, in words. This block is kept when the report is "
                 "regenerated.)*\n")


# --------------------------------------------------------------------------- reading


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def collect(stages: Sequence[Stage], output: Path) -> dict[RunKey, dict[str, Any]]:
    """Per (row, fraction, seed): the evaluation's metrics, scores and shift results, and
    the fine-tuning record."""
    runs: dict[RunKey, dict[str, Any]] = {}
    tuned = {s.name: s for s in stages if s.kind == "finetune"}
    for s in stages:
        if s.kind != "evaluate" or not s.complete:
            continue
        p = s.params
        where = output / s.name
        scores = np.load(where / "nominal" / "scores.npz")
        runs[p["row"], p["fraction"], p["seed"]] = {
            "metrics": _json(where / "nominal" / "metrics.json"),
            "probs": scores["probs"], "labels": scores["labels"], "group": scores["group"],
            "class_names": [str(c) for c in scores["class_names"]],
            "shift": _json(where / "shift" / "shift.json"),
            "shift_png": where / "shift" / "shift.png",
            "roc_png": where / "nominal" / "roc.png",
            "finetune": (tuned[s.needs[0]].record or {}).get("result", {}),
        }
    return runs


def collect_probes(stages: Sequence[Stage], output: Path) -> dict[ProbeKey, dict]:
    """Per (objective, pre-training size, seed): the probe.json of its pre-training."""
    out = {}
    for s in stages:
        if s.kind == "probe" and s.complete:
            got = _json(output / s.name / "probe.json")
            if got:
                p = s.params
                out[p["objective"], p.get("size", 1.0), p["seed"]] = got
    return out


# --------------------------------------------------------------------------- the report


def write_report(study: Study, stages: Sequence[Stage], output: Path, path: Path, *,
                 command: str | None = None, timing: Mapping[str, Any] | None = None) -> Path:
    """Write the Markdown report ``path`` and its PNGs into ``path.parent / path.stem``."""
    path = Path(path)
    figures = path.parent / path.stem
    figures.mkdir(parents=True, exist_ok=True)
    runs = collect(stages, output)
    discussion = _kept_discussion(path)
    md = [*_header(study, command), "## Data", "", data_sizes(study, stages), ""]
    if not runs:
        md += ["No evaluation has finished yet.", ""]
        path.write_text("\n".join(md))
        return path

    t = ResultTable(study, runs)
    rob = robustness(t)
    probes = collect_probes(stages, output)
    md += ["## What it shows", "", "<!-- discussion -->", discussion.rstrip("\n"),
           "<!-- /discussion -->", "", "Computed from the tables below:", ""]
    md += [f"* {line}" for line in findings(t, rob)] + [""]
    md += _in_distribution(t)
    md += _frozen_representation(probes, study)
    md += _roc_grid(t, figures)
    md += _against_fraction(t, figures)
    md += _under_shift(t, rob, figures)
    md += ["## Runs", "", "Fine-tuning: " + _finetune_text(t), "",
           timing_table(stages, timing), ""]
    path.write_text("\n".join(md))
    results = _results(t, rob)
    results["probes"] = [{"objective": k[0], "size": k[1], "seed": k[2],
                          "encoder": v["encoder"], "baseline": v["baseline"]}
                         for k, v in probes.items()]
    (output / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    return path


def _kept_discussion(path: Path) -> str:
    """The discussion of the report already at ``path`` (or the placeholder)."""
    kept = path.read_text() if path.is_file() else ""
    match = DISCUSSION.search(kept)
    return match.group(1) if match else NO_DISCUSSION


def _header(study: Study, command: str | None) -> list[str]:
    return ["# RS3L study: re-simulated positives against augmentations and other objectives",
            "",
            "Made by", "", "```sh", command or f"run_study({study.source!r})", "```", "",
            f"from the study config `{_display(study.source)}`:", "",
            "<details><summary>study config</summary>", "", "```toml", study.text.rstrip(),
            "```", "", "</details>", ""]


def _in_distribution(t: ResultTable) -> list[str]:
    study = t.study
    several = len(study.seeds) > 1
    names = t.class_names
    return [
        "## In distribution", "",
        f"Classes {', '.join(f'{c} = ' + ' + '.join(study.classes[c]) for c in names)}; "
        f"test split, {study.reference} jets "
        f"({', '.join(str(n) for n in sorted(set(t.n_test.values())))} of them). "
        "AUC and 1/εB are means over the class pairs (one-vs-one, score p_s / (p_s + "
        "p_b), as ParT on JetClass); accuracy is the 3-class argmax. "
        "± is the statistical error of the test sample (bootstrap, "
        f"{study.bootstrap} resamples)" +
        ("; [ ] the standard deviation over seeds " + ", ".join(map(str, study.seeds))
         if several else "") +
        f"; ΔAUC vs {study.baseline}: the difference of the means over seeds, ± its "
        "paired bootstrap error (same test jets for both)" +
        (", [ ] the standard deviation of the per-seed differences" if several else "") +
        "; bold where it exceeds twice the combined error sqrt(stat² + sd²/n_seeds)" +
        ("" if several else " (one seed: training noise not included)") +
        "; ≥: fewer than one background jet passed, the value is the number of "
        "background jets.", "", main_table(t), "", "Per class pair:", "",
        pair_table(t), ""]


def _frozen_representation(probes: Mapping[ProbeKey, dict], study: Study) -> list[str]:
    if not probes:
        return []
    first = next(iter(probes.values()))
    return ["## Frozen representation", "",
            "Every pre-trained encoder probed frozen (`resim probe`: BatchNorm statistics "
            "calibrated on the training jets; kNN with the training split's "
            f"{study.reference} jets as memory, the test split's as queries; logistic "
            "regression on the embedding; effective rank of its covariance; alignment "
            "over the realizations of a test group and uniformity (Wang & Isola); R² of "
            "linear fits of jet |η|, log pT and mass, trained on the training jets and "
            "scored on the test jets: |η| and pT carry almost no label information, so a "
            "high R² there is a shortcut). \"random init\" is the same networks at the "
            "weights their pre-training started from. Mean over seeds [standard "
            f"deviation]; {first['n_jets']['test']} test jets, "
            f"{first['n_jets']['train']} training jets.", "",
            probe_table(probes, list(study.objectives)), ""]


def _roc_grid(t: ResultTable, figures: Path) -> list[str]:
    """A table of ROC figures: a row per fraction, a column per class pair."""
    pairs = roc_pairs(t)
    grid = ["| labelled | " + " | ".join(p.replace("_vs_", " vs ") for p in pairs) + " |",
            "| --- " * (len(pairs) + 1) + "|"]
    for f in t.fractions:
        cells = [pct_label(f)]
        for pair in pairs:
            png = plot_rocs(t, f, pair, figures / f"roc_{pair}_{_tag(f)}.png")
            cells.append(f"![ROC {pair} {pct_label(f)}]({figures.name}/{png.name})")
        grid.append(row(cells))
    return ["### ROC curves", "", *grid, ""]


def _against_fraction(t: ResultTable, figures: Path) -> list[str]:
    md = ["### Metrics against the labelled fraction", ""]
    for metric, label in (("auc", "AUC (mean over pairs)"), ("accuracy", "accuracy"),
                          ("rejection_at_0.5", "1/εB at εS = 0.5 (mean over pairs)")):
        png = plot_vs_fraction(t, metric, label, figures / f"vs_fraction_{metric}.png")
        md += [f"![{label} against labelled fraction]({figures.name}/{png.name})", ""]
    return md


def _under_shift(t: ResultTable, rob: Robustness, figures: Path) -> list[str]:
    study = t.study
    others = [v for v in study.variations if v != study.reference]
    md = ["## Under shift", "",
          f"Each classifier (fine-tuned on {study.reference} jets) evaluated on the same "
          f"test groups re-simulated with every other variation "
          f"(`evaluate_shift`): the Jensen–Shannon distance between its output "
          f"distributions (per true class, then averaged over classes; 0 = identical) and "
          f"the change in AUC. The `seed` variation is the same physics with other random "
          f"numbers: its JS distance is the finite-sample floor the others must exceed. "
          f"After the /: the distance counting noise alone gives samples of these sizes "
          f"in these bins (`js_floor`, mean over classes). "
          + ("[ ] is the spread over seeds. " if len(study.seeds) > 1 else ""), ""]
    if not rob:
        return [*md, "No shift evaluation available (`evaluate_shift` did not run).", ""]
    md += ["JS distance to nominal [seed spread] / counting floor:", "",
           robustness_table(t, rob, others, "js"), "",
           "ΔAUC (variation − nominal):", "", robustness_table(t, rob, others, "dauc"), "",
           "Δaccuracy (variation − nominal):", "",
           robustness_table(t, rob, others, "dacc"), ""]
    for f in t.fractions:
        png = plot_robustness(rob, t.rows, f, others, figures / f"robustness_{_tag(f)}.png",
                              f"{100 * f:g} % labelled: shift against {study.reference}")
        md += [f"![robustness at {100 * f:g} %]({figures.name}/{png.name})", ""]
    return md + _output_distributions(t, figures)


def _output_distributions(t: ResultTable, figures: Path) -> list[str]:
    """The first two rows' output distributions per variation (copied from their shift
    evaluation), at the largest fraction."""
    f = max(t.fractions)
    shown = [r for r in t.rows[:2] if t.seeds(r, f)]
    md = []
    if shown:
        md += ["Output distributions per variation (100 % labelled, seed "
               f"{t.study.seeds[0]}):", ""]
    for r in shown:
        src = t.runs[r, f, t.seeds(r, f)[0]]["shift_png"]
        if src.is_file():
            dst = figures / f"outputs_{r}_{_tag(f)}.png"
            shutil.copyfile(src, dst)
            md += [f"![{r} outputs per variation]({figures.name}/{dst.name})", ""]
    return md


def _display(source: str) -> str:
    """A shipped study as ``train/configs/study/NAME.toml`` (not this machine's path)."""
    path = Path(source)
    if path.parent.name == "study" and path.parent.parent.name == "configs" and \
            path.parent.parent.parent.name == "train":
        return f"train/configs/study/{path.name}"
    return source


def _tag(fraction: float) -> str:
    return f"{100 * fraction:g}pct"


def _finetune_text(t: ResultTable) -> str:
    parts = []
    for f in t.fractions:
        ft: dict[str, Any] = next((t.runs[k]["finetune"] for k in t.runs if k[1] == f), {})
        if ft:
            parts.append(f"{100 * f:g} %: {ft.get('n_train_jets')} labelled jets, "
                         f"{ft.get('epochs')} epochs, {ft.get('steps')} steps")
    return "; ".join(parts) + "."


def _results(t: ResultTable, rob: Robustness) -> dict[str, Any]:
    """The report's numbers, JSON-ready (``DIR/results.json``)."""
    out: dict[str, Any] = {"class_names": t.class_names, "rows": {}}
    for (r, f), v in t.value.items():
        out["rows"].setdefault(r, {})[f"{f:g}"] = {
            "value": v, "error": t.error[r, f], "seed_sd": t.spread[r, f],
            "lower_bound": t.bound[r, f],
            "delta_auc": dataclasses.asdict(t.delta(r, f)),
            "shift": {var: {k: m[0] for k, m in d.items()}
                      for var, d in rob.get((r, f), {}).items()},
        }
    return out


__all__ = ["collect", "collect_probes", "write_report"]

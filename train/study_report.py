"""The report of a ``resim study``: tables, plots and a Markdown file from its stages.

Reads what the stages wrote (``stage.json`` records, ``evaluate/*/nominal/metrics.json``
and ``scores.npz``, ``evaluate/*/shift/shift.json``) and writes ``report.md`` with its
figures (PNGs) in a folder of the same stem beside it.

Uncertainties, so that a small study says what it can and cannot tell:

* **statistical** (``±``): a bootstrap over the test jets (``evaluate.bootstrap``
  resamples, fixed seed). Accuracy's equals the binomial error sqrt(a (1 - a) / N) to
  within the bootstrap's own noise. With several seeds, the resampled metric is the mean
  over seeds.
* **paired** differences (ΔAUC against the baseline): the same resampled jets for both
  classifiers, which removes the test sample's shared fluctuation; a difference larger
  than twice its error is called significant.
* **seeds** (``[sd]``): the standard deviation over the study's seeds (pre-training and
  fine-tuning both re-run), when there are several. The labelled subsets do not change
  with the seed (they are a fixed, nested hash of the group), so this spread does not
  include the choice of labelled jets.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .metrics import (
    classification_metrics,
    plot_metric_vs_fraction,
    plot_roc,
    roc_curves,
)

DISCUSSION = re.compile(r"<!-- discussion -->\n(.*?)<!-- /discussion -->", re.S)
WORKING_POINTS = (0.3, 0.5)
_METRICS = ("accuracy", "auc", "rejection_at_0.3", "rejection_at_0.5")


# --------------------------------------------------------------------------- reading


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def collect(stages: Sequence[Any], output: Path) -> dict[tuple[str, float, int], dict]:
    """Per (row, fraction, seed): the evaluation's metrics, scores and shift results, and
    the fine-tuning record."""
    runs: dict[tuple[str, float, int], dict] = {}
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


def collect_probes(stages: Sequence[Any], output: Path) -> dict[tuple[str, float, int], dict]:
    """Per (objective, pre-training size, seed): the probe.json of its pre-training."""
    out = {}
    for s in stages:
        if s.kind == "probe" and s.complete:
            got = _json(output / s.name / "probe.json")
            if got:
                p = s.params
                out[p["objective"], p.get("size", 1.0), p["seed"]] = got
    return out


PROBE_COLUMNS = (("kNN acc. (k = 20)", lambda r: (r["knn_accuracy"] or {}).get("20")),
                 ("linear probe AUC", lambda r: r["linear_auc"]),
                 ("effective rank", lambda r: r["effective_rank"]),
                 ("alignment", lambda r: r["alignment"]),
                 ("uniformity", lambda r: r["uniformity"]),
                 ("R² abs η", lambda r: r["r2"]["abs_eta"]),
                 ("R² log pT", lambda r: r["r2"]["log_pt"]),
                 ("R² mass", lambda r: r["r2"]["mass"]))


def probe_table(probes: Mapping[tuple[str, float, int], dict], objectives: Sequence[str]
                ) -> str:
    """Frozen-representation numbers per objective (and pre-training size): mean over seeds
    [standard deviation], and the same networks at their initial weights."""
    head = ["objective", "pre-training", *(c for c, _ in PROBE_COLUMNS),
            "ΔAUC vs random init"]
    lines = [_row(head), _row(["---"] * len(head))]
    sizes = sorted({k[1] for k in probes}, reverse=True)
    for size in sizes:
        for obj in [*objectives, None]:
            keys = [k for k in probes if k[1] == size and (k[0] == obj or obj is None)]
            if not keys:
                continue
            name = "random init" if obj is None else obj
            who = "baseline" if obj is None else "encoder"
            if obj is None:  # every objective's own starting point, pooled
                keys = [k for k in probes if k[1] == size]
            cells = [name, f"{100 * size:g} %"]
            for _, get in PROBE_COLUMNS:
                values = [get(probes[k][who]) for k in keys]
                cells.append(fmt(_mean(values), None, _sd(values)))
            gain = [probes[k]["encoder"]["linear_auc"] - probes[k]["baseline"]["linear_auc"]
                    for k in keys if probes[k]["encoder"]["linear_auc"] is not None]
            cells.append("—" if obj is None or not gain else
                         _signed(_mean(gain), None) + (f" [{_sd(gain):.3f}]"
                                                       if _sd(gain) is not None else ""))
            lines.append(_row(cells))
    return "\n".join(lines)


def numbers(m: Mapping[str, Any]) -> dict[str, float | None]:
    """The table's numbers of a metrics dict: top level and per class pair."""
    out = {k: m.get(k) for k in _METRICS}
    for name, pair in m.get("pairs", {}).items():
        for k in ("auc", "rejection_at_0.3", "rejection_at_0.5"):
            out[f"{name}:{k}"] = pair.get(k)
    return out


def bootstrap(runs: Sequence[tuple[np.ndarray, np.ndarray]], class_names: Sequence[str],
              resamples: int, seed: int = 12345) -> dict[str, np.ndarray]:
    """Each metric (see :func:`numbers`) on ``resamples`` bootstrap samples of the test
    jets, averaged over ``runs`` (one per seed, the same jets): {key: (resamples,)}.

    The same seed gives the same resampled jets for every classifier of the study, so
    differences between two classifiers' arrays are paired.
    """
    n = len(runs[0][1])
    rng = np.random.default_rng(seed)
    out: dict[str, list[float]] = {}
    for _ in range(resamples):
        idx = rng.integers(0, n, n)
        per_run = []
        for probs, labels in runs:
            try:
                per_run.append(numbers(classification_metrics(probs[idx], labels[idx],
                                                              class_names)))
            except ValueError:  # a resample without some class: skip it
                per_run = []
                break
        if not per_run:
            continue
        for key in per_run[0]:
            values = [r[key] for r in per_run if r[key] is not None]
            out.setdefault(key, []).append(float(np.mean(values)) if values else math.nan)
    return {k: np.asarray(v) for k, v in out.items()}


def _std(x: np.ndarray | None) -> float | None:
    if x is None or x.size < 2:
        return None
    x = x[np.isfinite(x)]
    return float(np.std(x, ddof=1)) if x.size > 1 else None


# --------------------------------------------------------------------------- the table


class Table:
    """Per (row, fraction): mean over seeds, seed spread, bootstrap errors, paired deltas."""

    def __init__(self, study: Any, runs: dict[tuple[str, float, int], dict]):
        self.study, self.runs = study, runs
        self.rows = [r for r in study.rows if any(k[0] == r for k in runs)]
        self.fractions = sorted({k[1] for k in runs})
        first = next(iter(runs.values()))
        self.class_names = first["class_names"]
        self.pairs = list(first["metrics"].get("pairs", {}))
        self.value: dict[tuple[str, float], dict[str, float | None]] = {}
        self.spread: dict[tuple[str, float], dict[str, float | None]] = {}
        self.bound: dict[tuple[str, float], dict[str, bool]] = {}
        self.error: dict[tuple[str, float], dict[str, float | None]] = {}
        self.samples: dict[tuple[str, float], dict[str, np.ndarray]] = {}
        self.n_test: dict[tuple[str, float], int] = {}
        for row in self.rows:
            for f in self.fractions:
                seeds = self.seeds(row, f)
                if not seeds:
                    continue
                per = [numbers(runs[row, f, s]["metrics"]) for s in seeds]
                key = (row, f)
                self.value[key] = {k: _mean([p[k] for p in per]) for k in per[0]}
                self.spread[key] = {k: _sd([p[k] for p in per]) for k in per[0]}
                self.bound[key] = {k: any(runs[row, f, s]["metrics"].get(
                    f"{k}_is_lower_bound", False) for s in seeds) for k in _METRICS}
                self.n_test[key] = len(runs[row, f, seeds[0]]["labels"])
                if study.bootstrap > 1:
                    boot = bootstrap([(runs[row, f, s]["probs"], runs[row, f, s]["labels"])
                                      for s in seeds], self.class_names, study.bootstrap)
                    self.samples[key] = boot
                    self.error[key] = {k: _std(v) for k, v in boot.items()}
                else:
                    self.error[key] = {}

    def seeds(self, row: str, fraction: float) -> list[int]:
        return sorted(s for (r, f, s) in self.runs if r == row and f == fraction)

    def delta(self, row: str, fraction: float, key: str = "auc",
              base: str | None = None) -> Delta:
        """(row - base) of ``key`` (base: the baseline by default): mean over seeds, its
        paired bootstrap error, and the spread of the per-seed differences."""
        base = base or self.study.baseline
        if not base or row == base or (base, fraction) not in self.value or \
                (row, fraction) not in self.value:
            return Delta()
        a, b = self.value[row, fraction].get(key), self.value[base, fraction].get(key)
        if a is None or b is None:
            return Delta()
        seeds = [s for s in self.seeds(row, fraction) if s in self.seeds(base, fraction)]
        per_seed = [numbers(self.runs[row, fraction, s]["metrics"])[key] -
                    numbers(self.runs[base, fraction, s]["metrics"])[key] for s in seeds]
        stat = None
        sa, sb = self.samples.get((row, fraction)), self.samples.get((base, fraction))
        same = all(np.array_equal(self.runs[row, fraction, s]["group"],
                                  self.runs[base, fraction, s]["group"]) for s in seeds)
        if sa is not None and sb is not None and same and key in sa and key in sb \
                and len(sa[key]) == len(sb[key]):
            stat = _std(sa[key] - sb[key])
        return Delta(a - b, stat, _sd(per_seed), len(per_seed))


@dataclass(frozen=True)
class Delta:
    """A difference to the baseline: ``value`` (mean over seeds), ``stat`` (paired
    bootstrap error of that mean), ``seeds`` (standard deviation of the per-seed
    differences; None with one seed) over ``n`` seeds."""

    value: float | None = None
    stat: float | None = None
    seeds: float | None = None
    n: int = 0

    @property
    def error(self) -> float | None:
        """Statistical and (with several seeds) training error of ``value`` combined."""
        if self.stat is None:
            return None
        spread = (self.seeds ** 2 / self.n) if self.seeds is not None and self.n else 0.0
        return math.sqrt(self.stat ** 2 + spread)

    def significant(self, sign: int) -> bool:
        """Beyond twice its combined error in the direction ``sign`` (+1 or -1)."""
        return self.value is not None and self.error is not None and \
            sign * self.value > 2 * self.error

    def text(self, digits: int = 3) -> str:
        if self.value is None:
            return "—"
        text = f"{self.value:+.{digits}f}"
        if self.stat is not None:
            text += f" ± {self.stat:.{digits}f}"
        if self.seeds is not None:
            text += f" [{self.seeds:.{digits}f}]"
        return f"**{text}**" if self.significant(+1) or self.significant(-1) else text


def _mean(values: Sequence[float | None]) -> float | None:
    v = [x for x in values if x is not None]
    return float(np.mean(v)) if v else None


def _sd(values: Sequence[float | None]) -> float | None:
    v = [x for x in values if x is not None]
    return float(np.std(v, ddof=1)) if len(v) > 1 else None


def fmt(value: float | None, error: float | None = None, spread: float | None = None, *,
        digits: int = 3, bound: bool = False) -> str:
    """``0.912 ± 0.011 [0.006]``: value, statistical error, seed spread."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if abs(value) >= 10:
        digits = 0 if abs(value) >= 100 else 1
    text = ("≥ " if bound else "") + f"{value:.{digits}f}"
    if error is not None and math.isfinite(error):
        text += f" ± {error:.{digits}f}"
    if spread is not None and math.isfinite(spread):
        text += f" [{spread:.{digits}f}]"
    return text


def _signed(value: float | None, error: float | None, digits: int = 3) -> str:
    if value is None:
        return "—"
    text = f"{value:+.{digits}f}"
    if error is not None:
        text += f" ± {error:.{digits}f}"
        if abs(value) > 2 * error:
            text = f"**{text}**"
    return text


def main_table(t: Table) -> str:
    head = ["objective", "labelled", "accuracy", "AUC", "1/εB at εS = 0.3",
            "1/εB at εS = 0.5", f"ΔAUC vs {t.study.baseline}" if t.study.baseline else ""]
    head = [h for h in head if h]
    lines = [_row(head), _row(["---"] * len(head))]
    for f in t.fractions:
        for row in t.rows:
            key = (row, f)
            if key not in t.value:
                continue
            v, e, s, b = t.value[key], t.error[key], t.spread[key], t.bound[key]
            cells = [row, f"{100 * f:g} %"]
            cells += [fmt(v[k], e.get(k), s.get(k), bound=b.get(k, False),
                          digits=3 if k in ("accuracy", "auc") else 1) for k in _METRICS]
            if t.study.baseline:
                cells.append(t.delta(row, f).text())
            lines.append(_row(cells))
    return "\n".join(lines)


def pair_table(t: Table) -> str:
    head = ["objective", "labelled"]
    for pair in t.pairs:
        label = pair.replace("_vs_", " vs ")
        head += [f"{label}: AUC", f"{label}: 1/εB(0.5)"]
    lines = [_row(head), _row(["---"] * len(head))]
    for f in t.fractions:
        for row in t.rows:
            key = (row, f)
            if key not in t.value:
                continue
            v, e, s = t.value[key], t.error[key], t.spread[key]
            cells = [row, f"{100 * f:g} %"]
            for pair in t.pairs:
                for k, d in (("auc", 3), ("rejection_at_0.5", 1)):
                    name = f"{pair}:{k}"
                    cells.append(fmt(v.get(name), e.get(name), s.get(name), digits=d))
            lines.append(_row(cells))
    return "\n".join(lines)


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


# --------------------------------------------------------------------------- robustness


def shift_numbers(shift: Mapping[str, Any] | None) -> dict[str, dict[str, float | None]]:
    """{variation: {"js": mean JS distance over classes, "dauc": ΔAUC, "dacc": Δaccuracy}}
    from what :func:`resim.train.evaluate.evaluate_shift` returns (shift_metrics' layout)."""
    if not shift:
        return {}
    out = {}
    for name, v in shift.get("variations", {}).items():
        delta = v.get("delta", {})
        out[name] = {"js": v.get("js_distance_mean"), "dauc": delta.get("auc"),
                     "dacc": delta.get("accuracy"), "floor": v.get("js_floor_mean")}
    return out


def robustness(t: Table) -> dict[tuple[str, float], dict[str, dict[str, tuple]]]:
    """Per (row, fraction) and variation: (mean, sd over seeds) of js, dauc, dacc."""
    out: dict[tuple[str, float], dict[str, dict[str, tuple]]] = {}
    for row in t.rows:
        for f in t.fractions:
            per = [shift_numbers(t.runs[row, f, s]["shift"]) for s in t.seeds(row, f)]
            per = [p for p in per if p]
            if not per:
                continue
            out[row, f] = {v: {k: (_mean([p[v][k] for p in per if v in p]),
                                   _sd([p[v][k] for p in per if v in p]))
                               for k in ("js", "dauc", "dacc", "floor")} for v in per[0]}
    return out


def robustness_table(t: Table, rob: Mapping, variations: Sequence[str], key: str,
                     digits: int = 3) -> str:
    head = ["objective", "labelled", *variations]
    lines = [_row(head), _row(["---"] * len(head))]
    for f in t.fractions:
        for row in t.rows:
            if (row, f) not in rob:
                continue
            cells = [row, f"{100 * f:g} %"]
            for v in variations:
                mean, sd = rob[row, f].get(v, {}).get(key, (None, None))
                floor = rob[row, f].get(v, {}).get("floor", (None, None))[0]
                cells.append(fmt(mean, None, sd, digits=digits) +
                             (f" / {floor:.{digits}f}" if floor is not None else "")
                             if key == "js" else
                             (_signed(mean, None, digits) + (f" [{sd:.{digits}f}]"
                                                             if sd is not None else "")))
            lines.append(_row(cells))
    return "\n".join(lines)


def plot_robustness(rob: Mapping, rows: Sequence[str], fraction: float,
                    variations: Sequence[str], path: Path, title: str) -> Path:
    """Two panels: mean JS distance of the output distributions, and ΔAUC, against each
    variation; one bar per objective (error bar: spread over seeds)."""
    import matplotlib.style
    import mplhep
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path.parent.mkdir(parents=True, exist_ok=True)
    with matplotlib.style.context(mplhep.style.ROOT):
        fig = Figure(figsize=(11, 9))
        FigureCanvasAgg(fig)
        axes = fig.subplots(2, 1, sharex=True)
        shown = [r for r in rows if (r, fraction) in rob]
        width = 0.8 / max(len(shown), 1)
        x = np.arange(len(variations))
        for k, row in enumerate(shown):
            for ax, key in zip(axes, ("js", "dauc"), strict=True):
                stats = [rob[row, fraction].get(v, {}).get(key, (None, None))
                         for v in variations]
                mean = np.array([m if m is not None else np.nan for m, _ in stats])
                sd = np.array([s if s is not None else 0.0 for _, s in stats])
                ax.bar(x - 0.4 + width * (k + 0.5), mean, width, yerr=sd if sd.any() else None,
                       capsize=3, label=row, color=f"C{k}")
        axes[0].set_ylabel("JS distance to nominal")
        axes[1].set_ylabel("ΔAUC to nominal")
        axes[1].axhline(0, color="grey", lw=1)
        axes[1].set_xticks(x, list(variations))
        top = np.nanmax([rob[r, fraction].get(v, {}).get("js", (0.0, None))[0] or 0.0
                         for r in shown for v in variations] + [0.01])
        axes[0].set_ylim(0, top * 1.5)  # room for the legend above the bars
        axes[0].legend(fontsize="small", ncols=min(len(shown), 3), loc="upper center")
        axes[0].set_title(title, fontsize="medium")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    return path


# --------------------------------------------------------------------------- data sizes


def data_sizes(study: Any, stages: Sequence[Any]) -> str:
    """Generated samples and the jets each split holds (nominal jets per class)."""
    from .config import load_config
    from .data import SPLITS, JetData

    gen = [s for s in stages if s.kind == "generate" and s.complete]
    lines = ["| sample | shards | hard events | groups | jets | jets per variation |",
             "| --- | --- | --- | --- | --- | --- |"]
    files = []
    for sample in study.samples:
        recs = [s.record["result"] for s in gen if s.params["sample"] == sample.name]
        files += [r["file"] for r in recs]
        per_var: dict[str, int] = {}
        for r in recs:
            for k, v in r["variations"].items():
                per_var[k] = per_var.get(k, 0) + v
        lines.append(_row([sample.name, str(len(recs)), str(sum(r["events"] for r in recs)),
                           str(sum(r["groups"] for r in recs)),
                           str(sum(r["jets"] for r in recs)),
                           ", ".join(f"{k} {v}" for k, v in per_var.items())]))
    ft = next((s for s in stages if s.kind == "finetune"), None)
    if not files or ft is None:
        return "\n".join(lines)
    splits = load_config(ft.params["config"], ft.params["overrides"]).data.splits
    fractions = dict(zip(SPLITS, splits, strict=True))
    d = JetData(files, dict(study.classes))
    group_of_jet = np.repeat(np.arange(d.n_groups), d.group_size)
    ref = d.variations.index(study.reference)
    lines += ["", f"Splits by hard event (train / val / test = {' / '.join(map(str, splits))})"
              f"; the classifiers train and are tested on {study.reference} jets:", "",
              "| split | groups | " + " | ".join(f"{study.reference} {c}" for c in d.classes)
              + " | all jets |", "| --- " * (len(d.classes) + 3) + "|"]
    for split in SPLITS:
        groups = d.groups_in(split, fractions)
        jets = groups[group_of_jet]
        nominal = jets & (d.jet_variation == ref)
        per_class = np.bincount(d.group_class[group_of_jet[nominal]], minlength=len(d.classes))
        lines.append(_row([split, str(int(groups.sum())), *map(str, per_class.tolist()),
                           str(int(jets.sum()))]))
    d.close()
    return "\n".join(lines)


# --------------------------------------------------------------------------- timing


def timing_table(stages: Sequence[Any], timing: Mapping[str, Any] | None) -> str:
    lines = ["| stage | count | total | longest |", "| --- | --- | --- | --- |"]
    for kind in ("generate", "pretrain", "finetune", "evaluate"):
        secs = [s.record.get("seconds", 0.0) for s in stages
                if s.kind == kind and s.complete and s.record]
        if secs:
            lines.append(_row([kind, str(len(secs)), _duration(sum(secs)),
                               _duration(max(secs))]))
    runs = (timing or {}).get("runs", [])
    if runs:
        working = [r for r in runs if r.get("stages_run", 1)]
        each = "; ".join(f"{_duration(r['wall_seconds'])} ({r.get('stages_run', '?')} stages run"
                         f"{', study complete' if r.get('complete') else ''})" for r in working)
        rest = len(runs) - len(working)
        lines += ["", f"Wall clock of each invocation of the command that ran stages: {each}"
                  + (f"; then {rest} report-only rerun(s)" if rest else "") +
                  f". Stages run {max(r.get('jobs', 1) for r in runs)} at a time, so their "
                  "times add up to more."]
    loads = [x for s in stages if s.complete and s.record
             for x in (s.record.get("load_start"), s.record.get("load_end")) if x is not None]
    if loads:
        lines += ["", f"Machine load (1-minute average, sampled at every stage's start and "
                  f"end; the study's own stages count): mean {np.mean(loads):.1f}, range "
                  f"{min(loads):.1f}–{max(loads):.1f}, on {os.cpu_count()} CPUs."]
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


# --------------------------------------------------------------------------- findings


def findings(t: Table, rob: Mapping, study: Any) -> list[str]:
    """Sentences computed from the numbers (not an interpretation)."""
    out = []
    base = study.baseline
    for f in t.fractions:
        ranked = sorted((r for r in t.rows if (r, f) in t.value),
                        key=lambda r: -(t.value[r, f]["auc"] or 0))
        if not ranked:
            continue
        text = f"At {100 * f:g} % of the labels the highest AUC is {ranked[0]}'s " \
               f"({fmt(t.value[ranked[0], f]['auc'], t.error[ranked[0], f].get('auc'))})"
        if base:
            better = [r for r in t.rows if t.delta(r, f).significant(+1)]
            worse = [r for r in t.rows if t.delta(r, f).significant(-1)]
            text += (f"; significantly above {base} (ΔAUC beyond twice its error, test "
                     "sample and seeds combined): "
                     f"{', '.join(better) or 'none'}; below: {', '.join(worse) or 'none'}.")
        out.append(text)
    for a, b in study.compare:
        if a in t.rows and b in t.rows:
            parts = [f"{100 * f:g} %: {t.delta(a, f, base=b).text()}" for f in t.fractions]
            out.append(f"{a} − {b} (paired ΔAUC, same test jets; ± test sample, [ ] seeds; "
                       f"bold beyond twice the combined error): " + "; ".join(parts) + ".")
    others = [v for v in study.variations if v != study.reference]
    floor = "seed" if "seed" in others else None
    physics = [v for v in others if v != floor]
    for f in t.fractions:
        rows = [r for r in t.rows if (r, f) in rob]
        js, dauc = [], []
        for r in rows:
            m = [rob[r, f][v]["js"][0] for v in physics if v in rob[r, f]]
            m = [x for x in m if x is not None]
            base = rob[r, f].get(floor, {}).get("js", (None,))[0] if floor else None
            if m:
                js.append(f"{r} {np.mean(m):.3f}" + (f" ({np.mean(m) - base:+.3f})"
                                                      if base is not None else ""))
            d = [rob[r, f][v]["dauc"][0] for v in physics if v in rob[r, f]]
            d = [x for x in d if x is not None]
            if d:
                dauc.append(f"{r} {np.mean(d):+.3f}")
        if js:
            out.append(f"At {100 * f:g} %, mean JS distance to {study.reference} over "
                       f"{', '.join(physics)}" + (f" (in brackets: minus the {floor} "
                                                  "variation's, the statistical floor)"
                                                  if floor else "") + ": " + ", ".join(js)
                       + "; mean ΔAUC over them: " + ", ".join(dauc) + ".")
    return out


# --------------------------------------------------------------------------- the report


def write_report(study: Any, stages: Sequence[Any], output: Path, path: Path, *,
                 command: str | None = None, timing: Mapping[str, Any] | None = None) -> Path:
    """Write the Markdown report ``path`` and its PNGs into ``path.parent / path.stem``."""
    path = Path(path)
    figures = path.parent / path.stem
    figures.mkdir(parents=True, exist_ok=True)
    rel = figures.name
    runs = collect(stages, output)
    kept = path.read_text() if path.is_file() else ""
    match = DISCUSSION.search(kept)
    discussion = match.group(1) if match else (
        "*(What the study shows, in words. This block is kept when the report is "
        "regenerated.)*\n")

    md = ["# RS3L study: re-simulated positives against augmentations and other objectives",
          "",
          "Made by", "", "```sh", command or f"run_study({study.source!r})", "```", "",
          f"from the study config `{_display(study.source)}`:", "", "<details><summary>study config"
          "</summary>", "", "```toml", study.text.rstrip(), "```", "", "</details>", ""]
    md += ["## Data", "", data_sizes(study, stages), ""]
    if not runs:
        md += ["No evaluation has finished yet.", ""]
        path.write_text("\n".join(md))
        return path

    t = Table(study, runs)
    rob = robustness(t)
    names = t.class_names
    md += ["## What it shows", "", "<!-- discussion -->", discussion.rstrip("\n"),
           "<!-- /discussion -->", "", "Computed from the tables below:", ""]
    md += [f"* {line}" for line in findings(t, rob, study)] + [""]

    md += ["## In distribution", "",
           f"Classes {', '.join(f'{c} = ' + ' + '.join(study.classes[c]) for c in names)}; "
           f"test split, {study.reference} jets "
           f"({', '.join(str(n) for n in sorted(set(t.n_test.values())))} of them). "
           "AUC and 1/εB are means over the class pairs (one-vs-one, score p_s / (p_s + "
           "p_b), as ParT on JetClass); accuracy is the 3-class argmax. "
           "± is the statistical error of the test sample (bootstrap, "
           f"{study.bootstrap} resamples)" +
           ("; [ ] the standard deviation over seeds " + ", ".join(map(str, study.seeds))
            if len(study.seeds) > 1 else "") +
           f"; ΔAUC vs {study.baseline}: the difference of the means over seeds, ± its "
           "paired bootstrap error (same test jets for both)" +
           (", [ ] the standard deviation of the per-seed differences"
            if len(study.seeds) > 1 else "") +
           "; bold where it exceeds twice the combined error sqrt(stat² + sd²/n_seeds)" +
           ("" if len(study.seeds) > 1 else " (one seed: training noise not included)") +
           "; ≥: fewer than one background jet passed, the value is the number of "
           "background jets.", "", main_table(t), "", "Per class pair:", "",
           pair_table(t), ""]

    probes = collect_probes(stages, output)
    if probes:
        first = next(iter(probes.values()))
        md += ["## Frozen representation", "",
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

    md += ["### ROC curves", ""]
    background = names[0]
    pairs = [p for p in t.pairs if p.endswith(f"_vs_{background}")] or t.pairs
    grid = ["| labelled | " + " | ".join(p.replace("_vs_", " vs ") for p in pairs) + " |",
            "| --- " * (len(pairs) + 1) + "|"]
    for f in t.fractions:
        cells = [f"{100 * f:g} %"]
        for pair in pairs:
            png = figures / f"roc_{pair}_{_tag(f)}.png"
            curves = {}
            for row in t.rows:
                seeds = t.seeds(row, f)
                if not seeds:
                    continue
                r = runs[row, f, seeds[0]]
                c = roc_curves(r["probs"], r["labels"], names)
                if pair in c:
                    curves[row] = c[pair]
            sig, bkg = pair.split("_vs_")
            plot_roc(curves, png, title=f"{sig} vs {bkg}, {100 * f:g} % labelled, seed "
                     f"{study.seeds[0]}", signal_label=sig, background_label=bkg)
            cells.append(f"![ROC {pair} {100 * f:g} %]({rel}/{png.name})")
        grid.append(_row(cells))
    md += [*grid, ""]

    md += ["### Metrics against the labelled fraction", ""]
    for metric, label in (("auc", "AUC (mean over pairs)"), ("accuracy", "accuracy"),
                          ("rejection_at_0.5", "1/εB at εS = 0.5 (mean over pairs)")):
        results = {row: {f: [numbers(runs[row, f, s]["metrics"])[metric]
                             for s in t.seeds(row, f)] for f in t.fractions
                         if t.seeds(row, f)} for row in t.rows}
        png = figures / f"vs_fraction_{metric}.png"
        plot_metric_vs_fraction(results, png, metric=metric, ylabel=label,
                                title=f"test split, {study.reference}; error bars: seeds")
        md += [f"![{label} against labelled fraction]({rel}/{png.name})", ""]

    others = [v for v in study.variations if v != study.reference]
    md += ["## Under shift", "",
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
        md += ["No shift evaluation available (`evaluate_shift` did not run).", ""]
    else:
        md += ["JS distance to nominal [seed spread] / counting floor:", "",
               robustness_table(t, rob, others, "js"), "",
               "ΔAUC (variation − nominal):", "", robustness_table(t, rob, others, "dauc"), "",
               "Δaccuracy (variation − nominal):", "",
               robustness_table(t, rob, others, "dacc"), ""]
        for f in t.fractions:
            png = figures / f"robustness_{_tag(f)}.png"
            plot_robustness(rob, t.rows, f, others, png,
                            f"{100 * f:g} % labelled: shift against {study.reference}")
            md += [f"![robustness at {100 * f:g} %]({rel}/{png.name})", ""]
        f = max(t.fractions)
        shown = [r for r in t.rows[:2] if t.seeds(r, f)]
        if shown:
            md += ["Output distributions per variation (100 % labelled, seed "
                   f"{study.seeds[0]}):", ""]
        for row in shown:
            src = runs[row, f, t.seeds(row, f)[0]]["shift_png"]
            if src.is_file():
                dst = figures / f"outputs_{row}_{_tag(f)}.png"
                shutil.copyfile(src, dst)
                md += [f"![{row} outputs per variation]({rel}/{dst.name})", ""]

    md += ["## Runs", "", "Fine-tuning: " + _finetune_text(t), "",
           timing_table(stages, timing), ""]
    path.write_text("\n".join(md))
    results = _results(t, rob)
    results["probes"] = [{"objective": k[0], "size": k[1], "seed": k[2],
                          "encoder": v["encoder"], "baseline": v["baseline"]}
                         for k, v in probes.items()]
    (output / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    return path


def _display(source: str) -> str:
    """A shipped study as ``train/configs/study/NAME.toml`` (not this machine's path)."""
    path = Path(source)
    if path.parent.name == "study" and path.parent.parent.name == "configs" and \
            path.parent.parent.parent.name == "train":
        return f"train/configs/study/{path.name}"
    return source


def _tag(fraction: float) -> str:
    return f"{100 * fraction:g}pct"


def _finetune_text(t: Table) -> str:
    parts = []
    for f in t.fractions:
        ft = next((t.runs[k]["finetune"] for k in t.runs if k[1] == f), {})
        if ft:
            parts.append(f"{100 * f:g} %: {ft.get('n_train_jets')} labelled jets, "
                         f"{ft.get('epochs')} epochs, {ft.get('steps')} steps")
    return "; ".join(parts) + "."


def _results(t: Table, rob: Mapping) -> dict[str, Any]:
    """The report's numbers, JSON-ready (``DIR/results.json``)."""
    out: dict[str, Any] = {"class_names": t.class_names, "rows": {}}
    for (row, f), v in t.value.items():
        out["rows"].setdefault(row, {})[f"{f:g}"] = {
            "value": v, "error": t.error[row, f], "seed_sd": t.spread[row, f],
            "lower_bound": t.bound[row, f],
            "delta_auc": dataclasses.asdict(t.delta(row, f)),
            "shift": {var: {k: m[0] for k, m in d.items()}
                      for var, d in rob.get((row, f), {}).items()},
        }
    return out

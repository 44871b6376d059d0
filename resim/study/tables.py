"""The Markdown tables of a study's report, and how its numbers are written.

``0.912 ± 0.011 [0.006]``: a value, its statistical error (bootstrap over the test jets),
and in brackets its spread over seeds (:func:`fmt`); differences are signed and bold
where they exceed twice their error (:func:`signed`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .spec import Study
from .stages import Stage
from .statistics import METRICS, ResultTable, Robustness, mean, sd

#: The frozen-probe table's columns: header, and how to read it from a probe.json part.
PROBE_COLUMNS: tuple[tuple[str, Callable[[dict[str, Any]], Any]], ...] = (
    ("kNN acc. (k = 20)", lambda r: (r["knn_accuracy"] or {}).get("20")),
    ("linear probe AUC", lambda r: r["linear_auc"]),
    ("effective rank", lambda r: r["effective_rank"]),
    ("alignment", lambda r: r["alignment"]),
    ("uniformity", lambda r: r["uniformity"]),
    ("R² abs η", lambda r: r["r2"]["abs_eta"]),
    ("R² log pT", lambda r: r["r2"]["log_pt"]),
    ("R² mass", lambda r: r["r2"]["mass"]))

ProbeKey = tuple[str, float, int]  # (objective, pre-training size, seed)


# --------------------------------------------------------------------------- numbers


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


def signed(value: float | None, error: float | None, digits: int = 3) -> str:
    """``+0.012 ± 0.004``, bold beyond twice its error; ``—`` for no value."""
    if value is None:
        return "—"
    text = f"{value:+.{digits}f}"
    if error is not None:
        text += f" ± {error:.{digits}f}"
        if abs(value) > 2 * error:
            text = f"**{text}**"
    return text


def row(cells: Sequence[str]) -> str:
    """A Markdown table row."""
    return "| " + " | ".join(cells) + " |"


def pct_label(fraction: float) -> str:
    """A labelled fraction as the tables write it: 0.01 -> ``1 %``."""
    return f"{100 * fraction:g} %"


def _header(head: Sequence[str]) -> list[str]:
    return [row(head), row(["---"] * len(head))]


# --------------------------------------------------------------------------- results


def main_table(t: ResultTable) -> str:
    """Accuracy, AUC and background rejections per row and fraction, and ΔAUC against
    the baseline."""
    head = ["objective", "labelled", "accuracy", "AUC", "1/εB at εS = 0.3",
            "1/εB at εS = 0.5", f"ΔAUC vs {t.study.baseline}" if t.study.baseline else ""]
    lines = _header([h for h in head if h])
    for f in t.fractions:
        for r in t.rows:
            key = (r, f)
            if key not in t.value:
                continue
            v, e, s, b = t.value[key], t.error[key], t.spread[key], t.bound[key]
            cells = [r, pct_label(f)]
            cells += [fmt(v[k], e.get(k), s.get(k), bound=b.get(k, False),
                          digits=3 if k in ("accuracy", "auc") else 1) for k in METRICS]
            if t.study.baseline:
                cells.append(t.delta(r, f).text())
            lines.append(row(cells))
    return "\n".join(lines)


def pair_table(t: ResultTable) -> str:
    """AUC and 1/εB at εS = 0.5 of every class pair, per row and fraction."""
    head = ["objective", "labelled"]
    for pair in t.pairs:
        label = pair.replace("_vs_", " vs ")
        head += [f"{label}: AUC", f"{label}: 1/εB(0.5)"]
    lines = _header(head)
    for f in t.fractions:
        for r in t.rows:
            key = (r, f)
            if key not in t.value:
                continue
            v, e, s = t.value[key], t.error[key], t.spread[key]
            cells = [r, pct_label(f)]
            for pair in t.pairs:
                for k, d in (("auc", 3), ("rejection_at_0.5", 1)):
                    name = f"{pair}:{k}"
                    cells.append(fmt(v.get(name), e.get(name), s.get(name), digits=d))
            lines.append(row(cells))
    return "\n".join(lines)


def robustness_table(t: ResultTable, rob: Robustness, variations: Sequence[str], key: str,
                     digits: int = 3) -> str:
    """``key`` (js, dauc or dacc) of every row and fraction against each variation."""
    lines = _header(["objective", "labelled", *variations])
    for f in t.fractions:
        for r in t.rows:
            if (r, f) not in rob:
                continue
            cells = [r, pct_label(f)]
            cells += [_shift_cell(rob[r, f].get(v, {}), key, digits) for v in variations]
            lines.append(row(cells))
    return "\n".join(lines)


def _shift_cell(stats: Mapping[str, tuple[float | None, float | None]], key: str,
                digits: int) -> str:
    """A JS distance as ``mean [sd] / floor``; a change as ``+mean [sd]``."""
    mean_, sd_ = stats.get(key, (None, None))
    if key == "js":
        floor = stats.get("floor", (None, None))[0]
        return fmt(mean_, None, sd_, digits=digits) + \
            (f" / {floor:.{digits}f}" if floor is not None else "")
    return signed(mean_, None, digits) + (f" [{sd_:.{digits}f}]" if sd_ is not None else "")


# --------------------------------------------------------------------------- probes


def probe_table(probes: Mapping[ProbeKey, dict], objectives: Sequence[str]) -> str:
    """Frozen-representation numbers per objective (and pre-training size): mean over seeds
    [standard deviation], and the same networks at their initial weights."""
    lines = _header(["objective", "pre-training", *(c for c, _ in PROBE_COLUMNS),
                     "ΔAUC vs random init"])
    for size in sorted({k[1] for k in probes}, reverse=True):
        for obj in [*objectives, None]:
            keys = _probe_keys(probes, size, obj)
            if keys:
                lines.append(row(_probe_cells(probes, keys, size, obj)))
    return "\n".join(lines)


def _probe_keys(probes: Mapping[ProbeKey, dict], size: float, obj: str | None
                ) -> list[ProbeKey]:
    """The probes of objective ``obj`` at ``size``; for the random init (None), every
    objective's (each pre-training's own starting point, pooled)."""
    return [k for k in probes if k[1] == size and (obj is None or k[0] == obj)]


def _probe_cells(probes: Mapping[ProbeKey, dict], keys: Sequence[ProbeKey], size: float,
                 obj: str | None) -> list[str]:
    who = "baseline" if obj is None else "encoder"
    cells = ["random init" if obj is None else obj, f"{100 * size:g} %"]
    for _, get in PROBE_COLUMNS:
        values = [get(probes[k][who]) for k in keys]
        cells.append(fmt(mean(values), None, sd(values)))
    cells.append("—" if obj is None else _probe_gain(probes, keys))
    return cells


def _probe_gain(probes: Mapping[ProbeKey, dict], keys: Sequence[ProbeKey]) -> str:
    """Linear-probe AUC gain over the random init: mean [sd] over seeds."""
    gain = [probes[k]["encoder"]["linear_auc"] - probes[k]["baseline"]["linear_auc"]
            for k in keys if probes[k]["encoder"]["linear_auc"] is not None]
    if not gain:
        return "—"
    spread = sd(gain)
    return signed(mean(gain), None) + (f" [{spread:.3f}]" if spread is not None else "")


# --------------------------------------------------------------------------- data sizes


def data_sizes(study: Study, stages: Sequence[Stage]) -> str:
    """Generated samples and the jets each split holds (nominal jets per class)."""
    gen = [s for s in stages if s.kind == "generate" and s.complete]
    lines = ["| sample | shards | hard events | groups | jets | jets per variation |",
             "| --- | --- | --- | --- | --- | --- |"]
    files = []
    for sample in study.samples:
        recs = [s.record["result"] for s in gen
                if s.record is not None and s.params["sample"] == sample.name]
        files += [r["file"] for r in recs]
        lines.append(_sample_row(sample.name, recs))
    ft = next((s for s in stages if s.kind == "finetune"), None)
    if files and ft is not None:
        lines += _split_rows(study, ft, files)
    return "\n".join(lines)


def _sample_row(name: str, recs: Sequence[Mapping[str, Any]]) -> str:
    per_var: dict[str, int] = {}
    for r in recs:
        for k, v in r["variations"].items():
            per_var[k] = per_var.get(k, 0) + v
    return row([name, str(len(recs)), str(sum(r["events"] for r in recs)),
                str(sum(r["groups"] for r in recs)), str(sum(r["jets"] for r in recs)),
                ", ".join(f"{k} {v}" for k, v in per_var.items())])


def _split_rows(study: Study, ft: Stage, files: Sequence[str]) -> list[str]:
    """Groups and nominal jets per class in each split, as the fine-tuning splits them."""
    from resim.splits import SPLITS
    from resim.train.config import load_config
    from resim.train.data import JetData

    splits = load_config(ft.params["config"], ft.params["overrides"]).data.splits
    fractions = dict(zip(SPLITS, splits, strict=True))
    d = JetData(list(files), dict(study.classes))
    group_of_jet = np.repeat(np.arange(d.n_groups), d.group_size)
    ref = d.variations.index(study.reference)
    lines = ["", f"Splits by hard event (train / val / test = {' / '.join(map(str, splits))})"
             f"; the classifiers train and are tested on {study.reference} jets:", "",
             "| split | groups | " + " | ".join(f"{study.reference} {c}" for c in d.classes)
             + " | all jets |", "| --- " * (len(d.classes) + 3) + "|"]
    for split in SPLITS:
        groups = d.groups_in(split, fractions)
        jets = groups[group_of_jet]
        nominal = jets & (d.jet_variation == ref)
        per_class = np.bincount(d.group_class[group_of_jet[nominal]], minlength=len(d.classes))
        lines.append(row([split, str(int(groups.sum())), *map(str, per_class.tolist()),
                          str(int(jets.sum()))]))
    d.close()
    return lines


# --------------------------------------------------------------------------- timing


def timing_table(stages: Sequence[Stage], timing: Mapping[str, Any] | None) -> str:
    """Run time per kind of stage, the wall clock of each invocation, the machine load."""
    lines = ["| stage | count | total | longest |", "| --- | --- | --- | --- |"]
    lines += _stage_time_rows(stages)
    runs = (timing or {}).get("runs", [])
    if runs:
        lines += ["", _invocations(runs)]
    loads = [x for s in stages if s.complete and s.record
             for x in (s.record.get("load_start"), s.record.get("load_end")) if x is not None]
    if loads:
        lines += ["", f"Machine load (1-minute average, sampled at every stage's start and "
                  f"end; the study's own stages count): mean {np.mean(loads):.1f}, range "
                  f"{min(loads):.1f}–{max(loads):.1f}, on {os.cpu_count()} CPUs."]
    return "\n".join(lines)


def _stage_time_rows(stages: Sequence[Stage]) -> list[str]:
    rows = []
    for kind in ("generate", "pretrain", "finetune", "evaluate"):
        secs = [s.record.get("seconds", 0.0) for s in stages
                if s.kind == kind and s.complete and s.record]
        if secs:
            rows.append(row([kind, str(len(secs)), duration(sum(secs)), duration(max(secs))]))
    return rows


def _invocations(runs: Sequence[Mapping[str, Any]]) -> str:
    """The wall clock of every invocation of the study command on this output."""
    working = [r for r in runs if r.get("stages_run", 1)]
    each = "; ".join(f"{duration(r['wall_seconds'])} ({r.get('stages_run', '?')} stages run"
                     f"{', study complete' if r.get('complete') else ''})" for r in working)
    rest = len(runs) - len(working)
    return (f"Wall clock of each invocation of the command that ran stages: {each}"
            + (f"; then {rest} report-only rerun(s)" if rest else "") +
            f". Stages run {max(r.get('jobs', 1) for r in runs)} at a time, so their "
            "times add up to more.")


def duration(seconds: float) -> str:
    """``3 min 05 s``, or ``42 s``."""
    seconds = round(seconds)
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


__all__ = ["PROBE_COLUMNS", "data_sizes", "duration", "fmt", "main_table", "pair_table",
           "pct_label", "probe_table", "robustness_table", "row", "signed", "timing_table"]

"""The numbers of a study's report, with their uncertainties.

* **statistical**: a bootstrap over the test jets (:func:`bootstrap`, ``evaluate.bootstrap``
  resamples, fixed seed). Accuracy's equals the binomial error sqrt(a (1 - a) / N) to
  within the bootstrap's own noise. With several seeds, the resampled metric is the mean
  over seeds.
* **paired** differences (:meth:`ResultTable.delta`, ΔAUC against the baseline): the same
  resampled jets for both classifiers, which removes the test sample's shared
  fluctuation; a difference larger than twice its error is called significant
  (:class:`Delta`).
* **seeds**: the standard deviation over the study's seeds (pre-training and fine-tuning
  both re-run), when there are several. The labelled subsets do not change with the seed
  (they are a fixed, nested hash of the group), so this spread does not include the
  choice of labelled jets.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from resim.train.metrics import classification_metrics

from .spec import Study

#: The metrics of the main table, per classifier.
METRICS = ("accuracy", "auc", "rejection_at_0.3", "rejection_at_0.5")
#: What :func:`shift_numbers` gives per variation.
SHIFT_KEYS = ("js", "dauc", "dacc", "floor")

RunKey = tuple[str, float, int]  # (row, labelled fraction, seed)
Cell = tuple[str, float]  # (row, labelled fraction)
Numbers = dict[str, float | None]
#: Per (row, fraction) and variation: (mean, sd over seeds) of each of SHIFT_KEYS.
Robustness = dict[Cell, dict[str, dict[str, tuple[float | None, float | None]]]]


def mean(values: Sequence[float | None]) -> float | None:
    """The mean of the values that are not None (None if there are none)."""
    v = [x for x in values if x is not None]
    return float(np.mean(v)) if v else None


def sd(values: Sequence[float | None]) -> float | None:
    """The sample standard deviation of the values that are not None (None below two)."""
    v = [x for x in values if x is not None]
    return float(np.std(v, ddof=1)) if len(v) > 1 else None


def finite_sd(x: np.ndarray | None) -> float | None:
    """The sample standard deviation of the finite entries of ``x`` (None below two)."""
    if x is None or x.size < 2:
        return None
    x = x[np.isfinite(x)]
    return float(np.std(x, ddof=1)) if x.size > 1 else None


def numbers(m: Mapping[str, Any]) -> Numbers:
    """The table's numbers of a metrics dict: top level and per class pair."""
    out = {k: m.get(k) for k in METRICS}
    for name, pair in m.get("pairs", {}).items():
        for k in ("auc", "rejection_at_0.3", "rejection_at_0.5"):
            out[f"{name}:{k}"] = pair.get(k)
    return out


def bootstrap(runs: Sequence[tuple[np.ndarray, np.ndarray]], class_names: Sequence[str],
              resamples: int, seed: int = 12345) -> dict[str, np.ndarray]:
    """Each metric (see :func:`numbers`) on ``resamples`` bootstrap samples of the test
    jets, averaged over ``runs`` (one per seed, the same jets): {key: (resamples,)}.

    The same seed gives the same resampled jets for every classifier of the study, so
    differences between two classifiers' arrays are paired. A metric a resample leaves
    undefined (an AUC without jets of one of its classes) is NaN there, and
    :func:`finite_sd` leaves it out; a resample the metrics refuse (ValueError) is
    dropped.
    """
    n = len(runs[0][1])
    rng = np.random.default_rng(seed)
    out: dict[str, list[float]] = {}
    for _ in range(resamples):
        per_run = _resampled(runs, rng.integers(0, n, n), class_names)
        if not per_run:
            continue
        for key in per_run[0]:
            values = [v for r in per_run if (v := r[key]) is not None]
            out.setdefault(key, []).append(float(np.mean(values)) if values else math.nan)
    return {k: np.asarray(v) for k, v in out.items()}


def _resampled(runs: Sequence[tuple[np.ndarray, np.ndarray]], idx: np.ndarray,
               class_names: Sequence[str]) -> list[Numbers]:
    """The numbers of every run on the jets ``idx``; empty if the metrics refuse them."""
    try:
        return [numbers(classification_metrics(probs[idx], labels[idx], class_names))
                for probs, labels in runs]
    except ValueError:
        return []


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


class ResultTable:
    """Per (row, fraction): mean over seeds, seed spread, bootstrap errors, paired deltas.

    ``runs``: per (row, fraction, seed) what the evaluation wrote (``metrics``, the test
    jets' ``probs``, ``labels`` and ``group``, ``class_names``; see
    :func:`resim.study.report.collect`).
    """

    def __init__(self, study: Study, runs: Mapping[RunKey, dict[str, Any]]):
        self.study, self.runs = study, runs
        self.rows = [r for r in study.rows if any(k[0] == r for k in runs)]
        self.fractions = sorted({k[1] for k in runs})
        first = next(iter(runs.values()))
        self.class_names: list[str] = first["class_names"]
        self.pairs = list(first["metrics"].get("pairs", {}))
        self.value: dict[Cell, Numbers] = {}
        self.spread: dict[Cell, Numbers] = {}
        self.bound: dict[Cell, dict[str, bool]] = {}
        self.error: dict[Cell, Numbers] = {}
        self.samples: dict[Cell, dict[str, np.ndarray]] = {}
        self.n_test: dict[Cell, int] = {}
        for row in self.rows:
            for f in self.fractions:
                seeds = self.seeds(row, f)
                if seeds:
                    self._add(row, f, seeds)

    def _add(self, row: str, f: float, seeds: list[int]) -> None:
        runs = [self.runs[row, f, s] for s in seeds]
        per = [numbers(r["metrics"]) for r in runs]
        key = (row, f)
        self.value[key] = {k: mean([p[k] for p in per]) for k in per[0]}
        self.spread[key] = {k: sd([p[k] for p in per]) for k in per[0]}
        self.bound[key] = {k: any(r["metrics"].get(f"{k}_is_lower_bound", False)
                                  for r in runs) for k in METRICS}
        self.n_test[key] = len(runs[0]["labels"])
        self.error[key] = {}
        if self.study.bootstrap > 1:
            boot = bootstrap([(r["probs"], r["labels"]) for r in runs], self.class_names,
                             self.study.bootstrap)
            self.samples[key] = boot
            self.error[key] = {k: finite_sd(v) for k, v in boot.items()}

    def seeds(self, row: str, fraction: float) -> list[int]:
        return sorted(s for (r, f, s) in self.runs if r == row and f == fraction)

    def delta(self, row: str, fraction: float, key: str = "auc",
              base: str | None = None) -> Delta:
        """(row - base) of ``key`` (base: the baseline by default): mean over seeds, its
        paired bootstrap error, and the spread of the per-seed differences."""
        base = base or self.study.baseline
        if not base or row == base:
            return Delta()
        a = self.value.get((row, fraction), {}).get(key)
        b = self.value.get((base, fraction), {}).get(key)
        if a is None or b is None:
            return Delta()
        seeds = [s for s in self.seeds(row, fraction) if s in self.seeds(base, fraction)]
        per_seed = [self._number(row, fraction, s, key) - self._number(base, fraction, s, key)
                    for s in seeds]
        return Delta(a - b, self._paired_error(row, base, fraction, key, seeds), sd(per_seed),
                     len(per_seed))

    def _number(self, row: str, fraction: float, seed: int, key: str) -> Any:
        return numbers(self.runs[row, fraction, seed]["metrics"])[key]

    def _paired_error(self, row: str, base: str, fraction: float, key: str,
                      seeds: Sequence[int]) -> float | None:
        """The bootstrap error of (row - base), both on the same resampled jets; None
        unless both were resampled and tested on the same groups."""
        sa, sb = self.samples.get((row, fraction)), self.samples.get((base, fraction))
        if sa is None or sb is None or key not in sa or key not in sb or \
                len(sa[key]) != len(sb[key]):
            return None
        same = all(np.array_equal(self.runs[row, fraction, s]["group"],
                                  self.runs[base, fraction, s]["group"]) for s in seeds)
        return finite_sd(sa[key] - sb[key]) if same else None


def shift_numbers(shift: Mapping[str, Any] | None) -> dict[str, Numbers]:
    """{variation: {"js": mean JS distance over classes, "dauc": ΔAUC, "dacc": Δaccuracy,
    "floor": the JS distance's counting floor}} from what
    :func:`resim.train.evaluate.evaluate_shift` returns (shift_metrics' layout)."""
    if not shift:
        return {}
    out = {}
    for name, v in shift.get("variations", {}).items():
        delta = v.get("delta", {})
        out[name] = {"js": v.get("js_distance_mean"), "dauc": delta.get("auc"),
                     "dacc": delta.get("accuracy"), "floor": v.get("js_floor_mean")}
    return out


def robustness(t: ResultTable) -> Robustness:
    """Per (row, fraction) and variation: (mean, sd over seeds) of js, dauc, dacc, floor."""
    out: Robustness = {}
    for row in t.rows:
        for f in t.fractions:
            per = [shift_numbers(t.runs[row, f, s]["shift"]) for s in t.seeds(row, f)]
            per = [p for p in per if p]
            if per:
                out[row, f] = {v: _over_seeds(per, v) for v in per[0]}
    return out


def _over_seeds(per: Sequence[Mapping[str, Numbers]], variation: str
                ) -> dict[str, tuple[float | None, float | None]]:
    values = [p[variation] for p in per if variation in p]
    return {k: (mean([x[k] for x in values]), sd([x[k] for x in values])) for k in SHIFT_KEYS}


__all__ = ["METRICS", "Delta", "ResultTable", "bootstrap", "finite_sd", "mean", "numbers",
           "robustness", "sd", "shift_numbers"]

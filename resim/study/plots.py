"""The figures of a study's report (PNGs): ROC curves of every row, metrics against the
labelled fraction, and the shift of each classifier under every variation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from resim.train.metrics import plot_metric_vs_fraction, plot_roc, roc_curves

from .statistics import ResultTable, Robustness, numbers


def roc_pairs(t: ResultTable) -> list[str]:
    """The class pairs the report shows ROC curves of: each class against the first
    (the background), or every pair if there is none such."""
    background = t.class_names[0]
    return [p for p in t.pairs if p.endswith(f"_vs_{background}")] or t.pairs


def plot_rocs(t: ResultTable, fraction: float, pair: str, path: Path) -> Path:
    """The ROC curve of class ``pair`` of every row at ``fraction`` (first seed)."""
    curves = {}
    for row in t.rows:
        seeds = t.seeds(row, fraction)
        if not seeds:
            continue
        r = t.runs[row, fraction, seeds[0]]
        c = roc_curves(r["probs"], r["labels"], t.class_names)
        if pair in c:
            curves[row] = c[pair]
    sig, bkg = pair.split("_vs_")
    return plot_roc(curves, path, title=f"{sig} vs {bkg}, {100 * fraction:g} % labelled, "
                    f"seed {t.study.seeds[0]}", signal_label=sig, background_label=bkg)


def plot_vs_fraction(t: ResultTable, metric: str, label: str, path: Path) -> Path:
    """``metric`` of every row against the labelled fraction (error bars: seeds)."""
    results = {row: {f: [numbers(t.runs[row, f, s]["metrics"])[metric]
                         for s in t.seeds(row, f)] for f in t.fractions if t.seeds(row, f)}
               for row in t.rows}
    return plot_metric_vs_fraction(results, path, metric=metric, ylabel=label,
                                   title=f"test split, {t.study.reference}; error bars: seeds")


def plot_robustness(rob: Robustness, rows: Sequence[str], fraction: float,
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
                mean, sd = _bars(rob, row, fraction, variations, key)
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


def _bars(rob: Robustness, row: str, fraction: float, variations: Sequence[str], key: str
          ) -> tuple[np.ndarray, np.ndarray]:
    """The bar heights (NaN where missing) and error bars (0 where missing) of a row."""
    stats = [rob[row, fraction].get(v, {}).get(key, (None, None)) for v in variations]
    mean = np.array([m if m is not None else np.nan for m, _ in stats])
    sd = np.array([s if s is not None else 0.0 for _, s in stats])
    return mean, sd


__all__ = ["plot_robustness", "plot_rocs", "plot_vs_fraction", "roc_pairs"]

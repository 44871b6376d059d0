"""The sentences of a study's report computed from its numbers (not an interpretation):
which row has the highest AUC and which differ significantly from the baseline, the
paired comparisons the study asks for, and how far each classifier moves under shift."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .statistics import ResultTable, Robustness
from .tables import fmt

#: A row's shift statistics: per variation, per key, (mean, sd over seeds).
ShiftStats = Mapping[str, Mapping[str, tuple[float | None, float | None]]]


def findings(t: ResultTable, rob: Robustness) -> list[str]:
    """Per labelled fraction the highest AUC, then the study's comparisons, then per
    fraction the shift of every row."""
    out = [text for f in t.fractions if (text := highest_auc(t, f))]
    out += comparisons(t)
    out += [text for f in t.fractions if (text := shift(t, rob, f))]
    return out


def highest_auc(t: ResultTable, f: float) -> str | None:
    """The row with the highest AUC at fraction ``f``, and the rows significantly above
    and below the baseline."""
    ranked = sorted((r for r in t.rows if (r, f) in t.value),
                    key=lambda r: -(t.value[r, f]["auc"] or 0))
    if not ranked:
        return None
    best = ranked[0]
    text = f"At {100 * f:g} % of the labels the highest AUC is {best}'s " \
           f"({fmt(t.value[best, f]['auc'], t.error[best, f].get('auc'))})"
    base = t.study.baseline
    if not base:
        return text
    better = [r for r in t.rows if t.delta(r, f).significant(+1)]
    worse = [r for r in t.rows if t.delta(r, f).significant(-1)]
    return text + (f"; significantly above {base} (ΔAUC beyond twice its error, test "
                   "sample and seeds combined): "
                   f"{', '.join(better) or 'none'}; below: {', '.join(worse) or 'none'}.")


def comparisons(t: ResultTable) -> list[str]:
    """The paired ΔAUC of every pair of rows the study compares (``evaluate.compare``)."""
    out = []
    for a, b in t.study.compare:
        if a in t.rows and b in t.rows:
            parts = [f"{100 * f:g} %: {t.delta(a, f, base=b).text()}" for f in t.fractions]
            out.append(f"{a} − {b} (paired ΔAUC, same test jets; ± test sample, [ ] seeds; "
                       f"bold beyond twice the combined error): " + "; ".join(parts) + ".")
    return out


def shift(t: ResultTable, rob: Robustness, f: float) -> str | None:
    """Mean JS distance and ΔAUC of every row at fraction ``f`` over the physics
    variations (all but the reference and the ``seed`` variation, the statistical floor,
    which is subtracted in brackets)."""
    study = t.study
    others = [v for v in study.variations if v != study.reference]
    floor = "seed" if "seed" in others else None
    physics = [v for v in others if v != floor]
    rows = [r for r in t.rows if (r, f) in rob]
    js = [text for r in rows if (text := _js(r, rob[r, f], physics, floor))]
    dauc = [text for r in rows if (text := _dauc(r, rob[r, f], physics))]
    if not js:
        return None
    return (f"At {100 * f:g} %, mean JS distance to {study.reference} over "
            f"{', '.join(physics)}" + (f" (in brackets: minus the {floor} variation's, the "
                                       "statistical floor)" if floor else "") + ": "
            + ", ".join(js) + "; mean ΔAUC over them: " + ", ".join(dauc) + ".")


def _means(stats: ShiftStats, variations: Sequence[str], key: str) -> list[float]:
    """The seed means of ``key`` under each of ``variations`` the row was evaluated on."""
    values = [stats[v][key][0] for v in variations if v in stats]
    return [x for x in values if x is not None]


def _js(row: str, stats: ShiftStats, physics: Sequence[str], floor: str | None) -> str | None:
    m = _means(stats, physics, "js")
    if not m:
        return None
    base = stats.get(floor, {}).get("js", (None, None))[0] if floor else None
    return f"{row} {np.mean(m):.3f}" + (f" ({np.mean(m) - base:+.3f})" if base is not None
                                        else "")


def _dauc(row: str, stats: ShiftStats, physics: Sequence[str]) -> str | None:
    d = _means(stats, physics, "dauc")
    return f"{row} {np.mean(d):+.3f}" if d else None


__all__ = ["comparisons", "findings", "highest_auc", "shift"]

"""What is in a data set: the numbers behind ``resim inspect`` (text, JSON, plots)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import numpy as np

from .dataset import JetDataset
from .flavour import SPLITTINGS
from .plotting import figure


def variation_setups(attrs: dict[str, Any], variations: tuple[str, ...]
                     ) -> dict[str, dict[str, Any]]:
    """Each variation's stage and pileup (``{"mu", "mitigation"}``, or None without
    pileup), as the file's run summary stores them (docs/format.md).

    Files made before the summary kept ``stages`` (format version 1) have the card's text,
    whose variations name their stage (``shower`` unless said). A converted benchmark has
    no card: its stage is None.
    """
    try:
        summary = json.loads(attrs.get("summary") or "{}")
    except json.JSONDecodeError:
        summary = {}
    stages = summary.get("stages") or _stages_of_card(attrs.get("card") or "")
    pileup = summary.get("pileup") or {}
    out = {}
    for v in variations:
        p = pileup.get(v)
        out[v] = {"stage": stages.get(v),
                  "pileup": None if p is None else {"mu": p["mu"],
                                                    "mitigation": p.get("mitigation")}}
    return out


def _stages_of_card(text: str) -> dict[str, str]:
    """Variation name -> stage, read from a card's text (older files' summaries lack it)."""
    try:
        variations = tomllib.loads(text).get("variations", {})
    except tomllib.TOMLDecodeError:
        return {}
    return {name: v.get("stage", "shower") for name, v in variations.items()
            if isinstance(v, dict)}


def describe(ds: JetDataset) -> dict[str, Any]:
    """Counts and per-variation / per-label statistics, JSON-ready."""
    a = ds.attrs
    var = ds.column("jets", "variation")
    lab = ds.column("jets", "label")
    level = ds.column("jets", "level")
    mass = ds.column("jets", "mass")
    ncon = ds.column("jets", "n_constituents")
    group_label = ds.column("groups", "label")
    group_size = ds.column("groups", "n_jets")
    flavour: dict[str, np.ndarray] | None
    try:  # per-jet flavour (format version 2; -1 where the source did not know it)
        flavour = {c: ds.column("jets", c) for c in ("n_b_hadrons", "n_c_hadrons", "splitting")}
        if len(lab) and (flavour["splitting"] < 0).all():
            flavour = None
    except KeyError:
        flavour = None

    def stats(mask: np.ndarray) -> dict[str, Any]:
        n = int(mask.sum())
        return {
            "jets": n,
            "mean_mass": float(mass[mask].mean()) if n else None,
            "mean_constituents": float(ncon[mask].mean()) if n else None,
        }

    def flavours(mask: np.ndarray) -> dict[str, int]:
        """Jets holding B / C hadrons, and jets per gluon splitting (cards.md)."""
        assert flavour is not None  # asked only of data sets that have it
        f = {c: v[mask] for c, v in flavour.items()}
        return {"with_b_hadron": int((f["n_b_hadrons"] > 0).sum()),
                "with_c_hadron": int((f["n_c_hadrons"] > 0).sum()),
                **{name: int((f["splitting"] == k).sum()) for k, name in SPLITTINGS.items()}}

    setups = variation_setups(a, ds.variations)
    levels = [(j, lv) for j, lv in enumerate(ds.levels) if (level == j).any()]

    def per_variation(i: int, v: str) -> dict[str, Any]:
        """A variation's jets, its set-up and, in a file of two levels, each level apart
        (the totals mix particle- and detector-level jets, which differ by design)."""
        out = {**stats(var == i), **setups[v]}
        if len(levels) > 1:
            out["per_level"] = {lv: stats((var == i) & (level == j)) for j, lv in levels}
        return out

    return {
        "path": str(ds.path),
        "card": a.get("card_path"),
        "created": a.get("created"),
        "seed": int(a["seed"]),
        "n_events": int(a["n_events"]),
        "n_groups": len(group_label),
        "n_jets": len(ds),
        "n_failed": int(a["n_failed"]),
        "n_lost": int(a["n_lost"]),
        "n_hard_failed": int(a["n_hard_failed"]),
        "variations": {v: int((var == i).sum()) for i, v in enumerate(ds.variations)},
        "labels": {lb: int((group_label == i).sum()) for i, lb in enumerate(ds.labels)},
        "per_variation": {v: per_variation(i, v) for i, v in enumerate(ds.variations)},
        "per_label": {lb: stats(lab == i) for i, lb in enumerate(ds.labels)},
        "per_level": {lv: stats(level == j) for j, lv in levels},
        "flavour_per_label": ({lb: flavours(lab == i) for i, lb in enumerate(ds.labels)}
                              if flavour is not None else None),
        "group_sizes": {int(k): int(n) for k, n in zip(*np.unique(group_size,
                                                                  return_counts=True),
                                                        strict=True)},
        "versions": {k[:-8]: a[k] for k in a if k.endswith("_version") and k != "format_version"},
    }


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def _pileup_text(p: dict[str, Any] | None) -> str:
    """``mu 50 puppi``; ``-`` without pileup."""
    if p is None:
        return "-"
    return f"mu {p['mu']:g}" + (f" {p['mitigation']}" if p.get("mitigation") else "")


def _variation_rows(per_variation: dict[str, dict[str, Any]]) -> list[str]:
    """One row per variation (per variation and level in a file of two levels): the stage
    it re-runs from and, in files with pileup, its mu and mitigation, which only its
    detector-level jets see."""
    with_pileup = any(s.get("pileup") for s in per_variation.values())
    with_levels = any("per_level" in s for s in per_variation.values())
    head = (f"  {'variation':<16}" + (f"{'level':<10}" if with_levels else "")
            + f"{'stage':<15}" + (f"{'pileup':<16}" if with_pileup else "")
            + f"{'jets':>9}{'<mass>/GeV':>12}{'<constituents>':>16}")
    lines = [head]
    for v, s in per_variation.items():
        for lv, row in (s["per_level"].items() if with_levels else [(None, s)]):
            if lv is not None and not row["jets"]:
                continue
            pileup = s.get("pileup") if lv in (None, "detector") else None
            lines.append(f"  {v:<16}" + (f"{lv:<10}" if with_levels else "")
                         + f"{s.get('stage') or '-':<15}"
                         + (f"{_pileup_text(pileup):<16}" if with_pileup else "")
                         + f"{row['jets']:>9}{_fmt(row['mean_mass'], '.1f'):>12}"
                         f"{_fmt(row['mean_constituents'], '.1f'):>16}")
    return lines


def as_text(d: dict[str, Any]) -> str:
    lines = [
        f"{d['path']}  (card {d['card']}, seed {d['seed']}, made {d['created']})",
        f"  {d['n_events']} hard events -> {d['n_groups']} groups, {d['n_jets']} jets",
        f"  failures: {d['n_failed']} failed attempts (retried), {d['n_lost']} realizations "
        f"lost, {d['n_hard_failed']} hard events failed",
        "",
    ]
    lines += _variation_rows(d["per_variation"])
    lines += ["", f"  {'label':<16}{'groups':>9}{'jets':>9}{'<mass>/GeV':>12}"]
    for lb, s in d["per_label"].items():
        lines.append(f"  {lb:<16}{d['labels'][lb]:>9}{s['jets']:>9}"
                     f"{_fmt(s['mean_mass'], '.1f'):>12}")
    if len(d["per_level"]) > 1:
        lines += ["", f"  {'level':<16}{'jets':>9}{'<mass>/GeV':>12}{'<constituents>':>16}"]
        for lv, s in d["per_level"].items():
            lines.append(f"  {lv:<16}{s['jets']:>9}{_fmt(s['mean_mass'], '.1f'):>12}"
                         f"{_fmt(s['mean_constituents'], '.1f'):>16}")
    if d.get("flavour_per_label"):
        names = list(next(iter(d["flavour_per_label"].values())))
        lines += ["", "  jets per label with B / C hadrons, and by gluon splitting:",
                  f"  {'label':<16}" + "".join(f"{n.replace('with_', ''):>11}" for n in names)]
        for lb, f in d["flavour_per_label"].items():
            lines.append(f"  {lb:<16}" + "".join(f"{f[n]:>11}" for n in names))
    sizes = ", ".join(f"{k}: {n}" for k, n in d["group_sizes"].items())
    lines += ["", f"  jets per group (size: groups): {sizes}",
              "  " + ", ".join(f"{k} {v}" for k, v in d["versions"].items())]
    return "\n".join(lines)


def _quartile_rows(ax, values: np.ndarray, which: np.ndarray, names: tuple[str, ...],
                   xlabel: str) -> None:
    """One row per variation: median and interquartile range, nominal's median as a line."""
    for i, name in enumerate(names):
        v = values[which == i]
        if len(v) == 0:
            continue
        q1, med, q3 = np.percentile(v, [25, 50, 75])
        ax.errorbar(med, i, xerr=[[med - q1], [q3 - med]], fmt="o", capsize=4, color="C0")
        if name == "nominal":
            ax.axvline(med, ls="--", color="grey", lw=1)
    ax.set_yticks(range(len(names)), names)
    ax.set_ylim(len(names) - 0.5, -0.5)
    ax.set_xlabel(xlabel)


def plot(ds: JetDataset, path: Path) -> None:
    """A one-page picture of a data set: jet mass per label, and for every variation the
    constituent multiplicity and jet mass (median and quartiles)."""
    var, lab = ds.column("jets", "variation"), ds.column("jets", "label")
    mass, ncon = ds.column("jets", "mass"), ds.column("jets", "n_constituents")
    top = float(np.percentile(mass, 99)) if len(mass) else 1.0
    bins = np.linspace(0, max(250.0, top), 51)
    with figure(path, (21, 6.5), 1, 3, dpi=90, width_ratios=[1.2, 1, 1]) as (fig, grid):
        axes = grid[0]
        for i, name in enumerate(ds.labels):
            if (lab == i).any():  # a label without jets has no shape to normalise
                axes[0].hist(mass[lab == i], bins=bins, histtype="step", lw=2, label=name,
                             density=True)
        axes[0].set(xlabel="jet mass [GeV]", ylabel="normalised")
        if len(mass):
            axes[0].legend(fontsize="small")
        _quartile_rows(axes[1], ncon, var, ds.variations, "constituents per jet")
        _quartile_rows(axes[2], mass, var, ds.variations, "jet mass [GeV]")
        axes[1].set_title("median, 25-75 %", fontsize="small")
        fig.suptitle(f"{ds.path.name}: {len(ds)} jets in {len(ds.column('groups', 'group'))} "
                     "groups", fontsize="medium")

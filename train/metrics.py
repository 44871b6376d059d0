"""Tagger metrics: ROC, AUC, background rejection, shift (robustness) measures, and plots.

Pure numpy on arrays of classifier outputs; every dict returned is JSON-ready (Python
floats, ints, bools, strings, lists, ``None`` where a quantity is undefined).

Conventions, following the top-tagging (Kasieczka et al., arXiv 1902.09914) and
JetClass / Particle Transformer (Qu, Li, Qian, arXiv 2202.03772) papers:

* **ROC**: ``eps_S`` and ``eps_B`` are the signal and background fractions with score
  >= a cut, one point per *distinct* score, from (0, 0) to (1, 1). Jets with equal scores
  enter together, so a tie block is one diagonal segment (a randomised cut inside it).
* **AUC** = trapezoid integral of eps_S d(eps_B): with the diagonal tie segments this is
  exactly P(s > b) + P(s = b) / 2, the Mann-Whitney statistic.
* **Background rejection** 1/eps_B at a signal efficiency (0.3, 0.5): eps_B is linearly
  interpolated on the ROC between the last point below and the first point at or above
  that efficiency (the lowest eps_B reachable there). weaver's code interpolates 1/eps_B
  instead; the two agree to O(1/N) on test sets of the papers' size.
  If fewer than one background jet would pass (eps_B < 1/N_B, including eps_B = 0), the
  rejection is reported as N_B — the largest the sample can resolve, a lower bound on the
  true value — and ``rejection_at_<eff>_is_lower_bound`` is ``True``.
* **Class pairs** (multi-class, as weaver / ParT for JetClass): one-vs-one on the jets of
  the two classes only, score p_s / (p_s + p_b) (0.5 where both are 0); by default every
  pair i < j of class indices with the *later* class as signal, so a binary problem's
  signal is its last class. For JetClass (QCD first) that is each signal class vs QCD.
* **Top-level** ``auc`` and ``rejection_at_*`` of a multi-class problem: the arithmetic
  mean over the pairs (the ``macro`` entry), or, when a ``signal`` class is named, that
  class against all others with score p_s. The dict's ``definition`` says which.
* **Output-distribution shift**: per true class c, the distribution of the classifier's
  p_c on the jets of class c (binary problems: the signal score for both classes),
  histogrammed in ``bins`` uniform bins on [0, 1]; the Jensen-Shannon *distance*
  (square root of the divergence, base 2: 0 identical, 1 disjoint) to the reference
  variation, as RS3L (arXiv 2403.07066) measures simulator sensitivity, and the 1-D
  Wasserstein distance of the unbinned scores. Both have a finite-sample floor
  (JS roughly sqrt(bins / (8 N ln 2)) for N jets per sample); a "seed" variation, the same
  physics with other random numbers, measures it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from resim.plotting import figure

T = TypeVar("T")
#: A metric at one labelled fraction: a value, or one per seed (None where undefined).
Values = float | None | Sequence[float | None]

WORKING_POINTS: tuple[float, ...] = (0.3, 0.5)
DELTA_KEYS = ("accuracy", "auc")  # plus rejection_at_<eff> for each working point


# -- ROC, AUC, rejection ----------------------------------------------------------------
def roc_curve(scores: np.ndarray, is_signal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(eps_S, eps_B) for cuts score >= t at every distinct score, from (0, 0) to (1, 1).

    Ties share one point (the curve jumps diagonally across a tie block). Needs at least
    one signal and one background jet.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    is_signal = np.asarray(is_signal).ravel()
    if is_signal.dtype != np.bool_:
        if not np.isin(is_signal, (0, 1)).all():
            raise ValueError("is_signal must be boolean or 0/1")
        is_signal = is_signal.astype(bool)
    if scores.shape != is_signal.shape:
        raise ValueError(f"scores has {scores.size} entries but is_signal {is_signal.size}")
    if not np.isfinite(scores).all():
        raise ValueError(f"scores contain {np.count_nonzero(~np.isfinite(scores))} NaN/inf")
    n_s = int(np.count_nonzero(is_signal))
    n_b = is_signal.size - n_s
    if n_s == 0 or n_b == 0:
        raise ValueError(f"a ROC needs signal and background jets (got {n_s} signal, "
                         f"{n_b} background)")
    order = np.argsort(-scores, kind="stable")
    s, sig = scores[order], is_signal[order]
    tp = np.cumsum(sig)
    fp = np.arange(1, sig.size + 1) - tp
    ends = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last jet of each distinct score
    eps_s = np.r_[0.0, tp[ends] / n_s]
    eps_b = np.r_[0.0, fp[ends] / n_b]
    return eps_s, eps_b


def auc(eps_s: np.ndarray, eps_b: np.ndarray) -> float:
    """Area under the ROC: trapezoid integral of eps_S over eps_B."""
    eps_s, eps_b = np.asarray(eps_s, np.float64), np.asarray(eps_b, np.float64)
    return float(np.sum(np.diff(eps_b) * (eps_s[1:] + eps_s[:-1]) / 2))


def background_rejection(eps_s: np.ndarray, eps_b: np.ndarray, signal_efficiency: float,
                         n_background: int) -> tuple[float, bool]:
    """(1/eps_B at ``signal_efficiency``, is_lower_bound) on a curve from ``roc_curve``.

    eps_B is interpolated linearly between the neighbouring ROC points; below 1/N_B
    (fewer than one background jet passing) the rejection is N_B, flagged as a bound.
    """
    if not 0.0 < signal_efficiency <= 1.0:
        raise ValueError(f"signal efficiency must be in (0, 1], got {signal_efficiency}")
    if n_background < 1:
        raise ValueError(f"n_background must be >= 1, got {n_background}")
    eps_s, eps_b = np.asarray(eps_s, np.float64), np.asarray(eps_b, np.float64)
    k = int(np.searchsorted(eps_s, signal_efficiency, side="left"))  # first eps_S >= eff
    k = min(max(k, 1), eps_s.size - 1)
    x0, x1, y0, y1 = eps_s[k - 1], eps_s[k], eps_b[k - 1], eps_b[k]
    eb = y1 if x1 == x0 else y0 + (y1 - y0) * (signal_efficiency - x0) / (x1 - x0)
    if eb * n_background < 1.0 - 1e-9:
        return float(n_background), True
    return float(1.0 / eb), False


def _rejection_key(eff: float) -> str:
    return f"rejection_at_{eff:g}"


def binary_metrics(scores: np.ndarray, is_signal: np.ndarray,
                   working_points: Sequence[float] = WORKING_POINTS) -> dict[str, Any]:
    """n_signal, n_background, auc, rejection_at_<eff> and rejection_at_<eff>_is_lower_bound.

    Values are ``None`` (flags ``False``) when either class has no jets.
    """
    is_signal = np.asarray(is_signal).astype(bool)
    n_s = int(np.count_nonzero(is_signal))
    n_b = int(is_signal.size - n_s)
    out: dict[str, Any] = {"n_signal": n_s, "n_background": n_b, "auc": None}
    for eff in working_points:
        out[_rejection_key(eff)] = None
        out[_rejection_key(eff) + "_is_lower_bound"] = False
    if n_s == 0 or n_b == 0:
        return out
    eps_s, eps_b = roc_curve(scores, is_signal)
    out["auc"] = auc(eps_s, eps_b)
    for eff in working_points:
        rej, bound = background_rejection(eps_s, eps_b, eff, n_b)
        out[_rejection_key(eff)] = rej
        out[_rejection_key(eff) + "_is_lower_bound"] = bound
    return out


# -- classification metrics -------------------------------------------------------------
def _check_outputs(probs: np.ndarray, labels: np.ndarray,
                   class_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Validated (probs (N, C) float64, labels (N,) int64); a 1-D probs is P(last class)."""
    class_names = list(class_names)
    n_classes = len(class_names)
    if n_classes < 2:
        raise ValueError(f"need at least two classes, got class_names={class_names}")
    if len(set(class_names)) != n_classes:
        raise ValueError(f"class_names must be unique, got {class_names}")
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim == 1 or (probs.ndim == 2 and probs.shape[1] == 1 and n_classes == 2):
        if n_classes != 2:
            raise ValueError(f"1-D probs (P(signal)) need 2 classes, got {n_classes}")
        p = probs.reshape(-1)
        probs = np.stack([1.0 - p, p], axis=1)
    if probs.ndim != 2 or probs.shape[1] != n_classes:
        raise ValueError(f"probs has shape {probs.shape} but class_names names {n_classes} "
                         f"classes {class_names}")
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != probs.shape[0]:
        raise ValueError(f"labels has shape {labels.shape}, expected ({probs.shape[0]},)")
    if probs.shape[0] == 0:
        raise ValueError("no jets: probs and labels are empty")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"labels must be in [0, {n_classes}), found {labels.min()} .. "
                         f"{labels.max()}")
    if not np.isfinite(probs).all() or probs.min() < 0.0 or probs.max() > 1.0:
        raise ValueError("probs must be finite probabilities in [0, 1] (softmax outputs); "
                         f"found {np.nanmin(probs)} .. {np.nanmax(probs)}")
    return probs, labels.astype(np.int64)


def pair_score(probs: np.ndarray, signal: int, background: int) -> np.ndarray:
    """One-vs-one discriminant p_s / (p_s + p_b); 0.5 where both are zero."""
    ps, pb = probs[:, signal], probs[:, background]
    total = ps + pb
    return np.divide(ps, total, out=np.full_like(ps, 0.5), where=total > 0)


def _class_index(name: str, class_names: Sequence[str], what: str) -> int:
    try:
        return list(class_names).index(name)
    except ValueError:
        raise ValueError(f"{what} {name!r} is not a class; classes are {list(class_names)}") \
            from None


def _index_pairs(names: Sequence[str], signal: str | None,
                 pairs: Sequence[tuple[str, str]] | None) -> list[tuple[int, int]]:
    """(signal, background) class indices: the given name pairs, or every i < j with the
    later class as signal (for two classes and a named signal: that signal first)."""
    if pairs is not None:
        index_pairs = [(_class_index(s, names, "pair signal"),
                        _class_index(b, names, "pair background")) for s, b in pairs]
        if any(s == b for s, b in index_pairs):
            raise ValueError(f"a pair needs two different classes, got {list(pairs)}")
        return index_pairs
    if len(names) == 2 and signal is not None:
        s = _class_index(signal, names, "signal")
        return [(s, 1 - s)]
    return [(j, i) for i in range(len(names)) for j in range(i + 1, len(names))]


def roc_curves(probs: np.ndarray, labels: np.ndarray, class_names: Sequence[str], *,
               signal: str | None = None, pairs: Sequence[tuple[str, str]] | None = None
               ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The ROC curves behind classification_metrics, for plot_roc: one per class pair
    ("<signal>_vs_<background>", same pairs and scores), plus "<signal>_vs_all" (score
    p_signal) when a signal is named in a multi-class problem. Pairs lacking a class are
    left out."""
    probs, labels = _check_outputs(probs, labels, class_names)
    names = [str(n) for n in class_names]
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for s, b in _index_pairs(names, signal, pairs):
        keep = (labels == s) | (labels == b)
        is_sig = labels[keep] == s
        if is_sig.any() and not is_sig.all():
            curves[f"{names[s]}_vs_{names[b]}"] = roc_curve(pair_score(probs[keep], s, b),
                                                             is_sig)
    if signal is not None and len(names) > 2:
        s = _class_index(signal, names, "signal")
        if (labels == s).any() and (labels != s).any():
            curves[f"{names[s]}_vs_all"] = roc_curve(probs[:, s], labels == s)
    return curves


def _mean_over_pairs(pairs: Mapping[str, Mapping[str, Any]],
                     working_points: Sequence[float]) -> dict[str, Any]:
    """Arithmetic means over the pairs that have both classes; a mean over a lower bound
    is flagged as a lower bound."""
    valid = [p for p in pairs.values() if p["auc"] is not None]
    out: dict[str, Any] = {"n_pairs": len(valid),
                           "auc": float(np.mean([p["auc"] for p in valid])) if valid else None}
    for eff in working_points:
        key = _rejection_key(eff)
        out[key] = float(np.mean([p[key] for p in valid])) if valid else None
        out[key + "_is_lower_bound"] = any(p[key + "_is_lower_bound"] for p in valid)
    return out


def classification_metrics(probs: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                           *, signal: str | None = None,
                           pairs: Sequence[tuple[str, str]] | None = None,
                           working_points: Sequence[float] = WORKING_POINTS) -> dict[str, Any]:
    """Accuracy, AUC and background rejections of a classifier's outputs, JSON-ready.

    ``probs`` (N, C) class probabilities (or (N,) P(last class) for two classes),
    ``labels`` (N,) true class indices. Returns

    * ``n_jets``, ``class_names``, ``class_counts``, ``accuracy`` (argmax),
      ``confusion`` (rows true class, columns predicted; counts);
    * ``pairs``: {"<signal>_vs_<background>": binary_metrics of that pair} — by default
      every i < j with the later class as signal, or the given (signal, background) names;
    * ``macro``: means over the pairs;
    * top level ``auc``, ``rejection_at_<eff>``, ``rejection_at_<eff>_is_lower_bound``,
      ``signal``, ``background`` and ``definition``: for two classes the one pair
      (signal = last class unless ``signal`` names the other); for more, ``signal`` against
      all other classes (score p_signal) if given, else the ``macro`` means.
    """
    probs, labels = _check_outputs(probs, labels, class_names)
    names = [str(n) for n in class_names]
    n_classes = len(names)
    predicted = np.argmax(probs, axis=1)
    confusion = np.bincount(labels * n_classes + predicted, minlength=n_classes * n_classes)
    out: dict[str, Any] = {
        "n_jets": int(labels.size),
        "class_names": names,
        "class_counts": {n: int(c) for n, c in zip(names, np.bincount(labels,
                                                                       minlength=n_classes),
                                                    strict=True)},
        "accuracy": float(np.mean(predicted == labels)),
        "confusion": confusion.reshape(n_classes, n_classes).tolist(),
    }
    sig_index = None if signal is None else _class_index(signal, names, "signal")
    index_pairs = _index_pairs(names, signal, pairs)
    pair_metrics: dict[str, dict[str, Any]] = {}
    for s, b in index_pairs:
        keep = (labels == s) | (labels == b)
        metrics = binary_metrics(pair_score(probs[keep], s, b), labels[keep] == s,
                                 working_points)
        pair_metrics[f"{names[s]}_vs_{names[b]}"] = {"signal": names[s], "background": names[b],
                                                     **metrics}
    out["pairs"] = pair_metrics
    out["macro"] = _mean_over_pairs(pair_metrics, working_points)

    summary_keys = ["auc"] + [_rejection_key(e) + x for e in working_points
                              for x in ("", "_is_lower_bound")]
    if n_classes == 2 and pairs is None:
        first = next(iter(pair_metrics.values()))
        out["signal"], out["background"] = first["signal"], first["background"]
        out["definition"] = (f"{first['signal']!r} vs {first['background']!r}, score "
                             f"p_{first['signal']} / (p_{first['signal']} + "
                             f"p_{first['background']})")
        out.update({k: first[k] for k in summary_keys})
    elif sig_index is not None:
        metrics = binary_metrics(probs[:, sig_index], labels == sig_index, working_points)
        out["signal"] = names[sig_index]
        out["background"] = [n for i, n in enumerate(names) if i != sig_index]
        out["definition"] = (f"{names[sig_index]!r} vs all other classes, score "
                             f"p_{names[sig_index]}")
        out.update({k: metrics[k] for k in summary_keys})
    else:
        out["signal"] = out["background"] = None
        n_pairs = out["macro"]["n_pairs"]
        out["definition"] = (f"mean over {n_pairs} class pair{'s' * (n_pairs != 1)} (one-vs-one "
                             "on the jets of the two classes, score p_s / (p_s + p_b))")
        out.update({k: out["macro"][k] for k in summary_keys})
    return out


# -- distances between output distributions ----------------------------------------------
def js_distance_from_histograms(p: np.ndarray, q: np.ndarray, base: float = 2.0) -> float:
    """Jensen-Shannon distance sqrt(JSD) of two histograms (normalised here)."""
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    if p.shape != q.shape:
        raise ValueError(f"histograms differ in shape: {p.shape} vs {q.shape}")
    if (p < 0).any() or (q < 0).any() or p.sum() <= 0 or q.sum() <= 0:
        raise ValueError("histograms must be non-negative with a positive sum")
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log(a[nz] / m[nz])))

    divergence = (kl(p) + kl(q)) / 2 / math.log(base)
    return math.sqrt(max(divergence, 0.0))


def _edges(bins: int | Sequence[float] | np.ndarray, samples: Sequence[np.ndarray],
           range_: tuple[float, float] | None) -> np.ndarray:
    if np.ndim(bins) == 0:
        n = int(bins)  # type: ignore[arg-type]
        if n < 1:
            raise ValueError(f"bins must be >= 1, got {bins}")
        if range_ is None:
            lo = min(float(np.min(s)) for s in samples)
            hi = max(float(np.max(s)) for s in samples)
            range_ = (lo, hi if hi > lo else lo + 1.0)
        return np.linspace(range_[0], range_[1], n + 1)
    edges = np.asarray(bins, np.float64)
    if edges.ndim != 1 or edges.size < 2 or (np.diff(edges) <= 0).any():
        raise ValueError("bin edges must be a strictly increasing 1-D sequence")
    return edges


def js_distance(p_scores: np.ndarray, q_scores: np.ndarray,
                bins: int | Sequence[float] | np.ndarray = 50,
                range: tuple[float, float] | None = None, base: float = 2.0) -> float:
    """Jensen-Shannon distance between the histograms of two samples (base 2: 0 .. 1).

    ``bins``: a number of uniform bins over ``range`` (default: the two samples' joint
    min..max) or the bin edges. Values outside the edges are an error, not dropped.
    """
    p, q = np.asarray(p_scores, np.float64).ravel(), np.asarray(q_scores, np.float64).ravel()
    if p.size == 0 or q.size == 0:
        raise ValueError(f"js_distance needs two non-empty samples (sizes {p.size}, {q.size})")
    edges = _edges(bins, (p, q), range)
    hp, hq = np.histogram(p, edges)[0], np.histogram(q, edges)[0]
    for name, sample, h in (("p_scores", p, hp), ("q_scores", q, hq)):
        if h.sum() != sample.size:
            raise ValueError(f"{sample.size - h.sum()} of {sample.size} {name} lie outside the "
                             f"bin edges [{edges[0]}, {edges[-1]}]")
    return js_distance_from_histograms(hp, hq, base)


def _occupied(a: np.ndarray, b: np.ndarray, edges: np.ndarray) -> int:
    """Bins of ``edges`` holding an entry of ``a`` or ``b``."""
    counts = np.histogram(np.concatenate([a, b]), bins=edges)[0]
    return int((counts > 0).sum())


def js_floor(n_a: int, n_b: int, bins: int) -> float:
    """The JS distance (base 2) two independent samples of ``n_a`` and ``n_b`` entries from
    one distribution show on average from counting noise alone, in ``bins`` occupied bins:
    sqrt((bins - 1) (1/n_a + 1/n_b) / (8 ln 2)), the second-order expansion of the JS
    divergence, sum (p - q)² / (8 m), whose expectation is (bins - 1)(1/n_a + 1/n_b) / 8."""
    if n_a < 1 or n_b < 1 or bins < 1:
        return float("nan")
    return math.sqrt((bins - 1) * (1.0 / n_a + 1.0 / n_b) / (8.0 * math.log(2.0)))


def wasserstein(p: np.ndarray, q: np.ndarray) -> float:
    """1-D Wasserstein-1 (earth mover's) distance between two samples: integral |F_p - F_q|."""
    p = np.sort(np.asarray(p, np.float64).ravel())
    q = np.sort(np.asarray(q, np.float64).ravel())
    if p.size == 0 or q.size == 0:
        raise ValueError(f"wasserstein needs two non-empty samples (sizes {p.size}, {q.size})")
    grid = np.sort(np.concatenate([p, q]))
    cdf_p = np.searchsorted(p, grid[:-1], side="right") / p.size
    cdf_q = np.searchsorted(q, grid[:-1], side="right") / q.size
    return float(np.sum(np.abs(cdf_p - cdf_q) * np.diff(grid)))


# -- robustness under a change of simulator ----------------------------------------------
def class_output_scores(probs: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                        signal: str | None = None) -> dict[str, np.ndarray]:
    """Per true class, the output whose distribution the shift measures compare.

    Multi-class: p_c on the jets of class c. Two classes: the signal discriminant
    p_s / (p_s + p_b) (signal = last class or ``signal``) on the jets of each class.
    """
    probs, labels = _check_outputs(probs, labels, class_names)
    names = [str(n) for n in class_names]
    if len(names) == 2:
        s = 1 if signal is None else _class_index(signal, names, "signal")
        score = pair_score(probs, s, 1 - s)
        return {n: score[labels == i] for i, n in enumerate(names)}
    return {n: probs[labels == i, i] for i, n in enumerate(names)}


def _delta(value: Any, ref: Any, relative: bool) -> float | None:
    if value is None or ref is None:
        return None
    if relative:
        return None if ref == 0 else float((value - ref) / ref)
    return float(value - ref)


def _metric_deltas(metrics: Mapping[str, Any], ref: Mapping[str, Any],
                   working_points: Sequence[float], relative: bool) -> dict[str, Any]:
    keys = [*DELTA_KEYS, *(_rejection_key(e) for e in working_points)]
    out: dict[str, Any] = {k: _delta(metrics[k], ref[k], relative) for k in keys}
    out["pairs"] = {name: {k: _delta(pair[k], ref["pairs"][name][k], relative)
                           for k in keys[1:]}
                    for name, pair in metrics["pairs"].items()}
    return out


def shift_metrics(per_variation: Mapping[str, tuple[np.ndarray, np.ndarray]],
                  reference: str = "nominal", class_names: Sequence[str] | None = None, *,
                  signal: str | None = None, pairs: Sequence[tuple[str, str]] | None = None,
                  working_points: Sequence[float] = WORKING_POINTS,
                  bins: int | Sequence[float] = 50) -> dict[str, Any]:
    """How one classifier's performance and outputs move across simulator variations.

    ``per_variation``: {variation name: (probs (N, C), labels (N,))}, one classifier
    evaluated on each variation (e.g. trained on nominal). Returns ``reference``,
    ``class_names``, ``bin_edges``, ``definition`` and ``variations``: per variation
    (the reference included, with zero deltas)

    * ``metrics``: classification_metrics;
    * ``delta`` / ``relative_delta``: accuracy, auc, rejection_at_<eff> minus (over) the
      reference's, at the top level and per pair (``None`` where undefined);
    * ``js_distance`` / ``wasserstein``: per class, the distance of that class's output
      distribution (see class_output_scores) to the reference's; ``js_distance_mean``
      over the classes. Scores are histogrammed on ``bins`` uniform bins in [0, 1] (or
      the given edges);
    * ``js_floor`` (per class) / ``js_floor_mean``: the distance counting noise alone gives
      samples of these sizes (:func:`js_floor`, in the bins either sample occupies): a
      distance means something only well above it.
    """
    names, n_classes = _class_names(per_variation, reference, class_names)
    edges = _edges(bins, (), (0.0, 1.0))
    evaluated = _per_variation(per_variation, lambda probs, labels: (
        classification_metrics(probs, labels, names, signal=signal, pairs=pairs,
                               working_points=working_points),
        class_output_scores(probs, labels, names, signal)))
    ref_metrics, ref_scores = evaluated[reference]
    variations: dict[str, Any] = {}
    for name, (metrics, scores) in evaluated.items():
        variations[name] = {
            "metrics": metrics,
            "delta": _metric_deltas(metrics, ref_metrics, working_points, False),
            "relative_delta": _metric_deltas(metrics, ref_metrics, working_points, True),
            **_distances(scores, ref_scores, edges),
        }
    return {
        "reference": reference,
        "class_names": names,
        "bin_edges": edges.tolist(),
        "definition": ("per true class c: " + ("the signal discriminant" if n_classes == 2
                                                else "p_c") +
                       f" on the jets of class c, compared with {reference!r}; JS distance "
                       "base 2 on the bin edges, Wasserstein-1 unbinned"),
        "variations": variations,
    }


def _class_names(per_variation: Mapping[str, tuple[np.ndarray, np.ndarray]], reference: str,
                 class_names: Sequence[str] | None) -> tuple[list[str], int]:
    """The class names (default "0", "1", ...) and their number, from the reference's
    outputs (which must be there)."""
    if reference not in per_variation:
        raise KeyError(f"reference variation {reference!r} not among the variations "
                       f"{sorted(per_variation)}")
    first_probs = np.asarray(per_variation[reference][0])
    n_classes = 2 if first_probs.ndim == 1 else first_probs.shape[1]
    names = [str(i) for i in range(n_classes)] if class_names is None else list(class_names)
    return names, n_classes


def _per_variation(per_variation: Mapping[str, tuple[np.ndarray, np.ndarray]],
                   compute: Callable[[np.ndarray, np.ndarray], T]) -> dict[str, T]:
    """``compute(probs, labels)`` of every variation; its errors name the variation."""
    out = {}
    for name, (probs, labels) in per_variation.items():
        try:
            out[name] = compute(probs, labels)
        except ValueError as err:
            raise ValueError(f"variation {name!r}: {err}") from None
    return out


def _distances(scores: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray],
               edges: np.ndarray) -> dict[str, Any]:
    """Per class, the JS distance of one variation's output distribution to the
    reference's, its counting floor and the Wasserstein distance (None where either
    sample is empty); the JS distances and floors also as means over the classes."""
    both = {c: bool(s.size and ref[c].size) for c, s in scores.items()}
    js = {c: js_distance(s, ref[c], edges) if both[c] else None for c, s in scores.items()}
    floor = {c: js_floor(s.size, ref[c].size, _occupied(s, ref[c], edges)) if both[c]
             else None for c, s in scores.items()}
    return {"js_distance": js, "js_distance_mean": _mean_or_none(js.values()),
            "js_floor": floor, "js_floor_mean": _mean_or_none(floor.values()),
            "wasserstein": {c: wasserstein(s, ref[c]) if both[c] else None
                            for c, s in scores.items()}}


def _mean_or_none(values: Iterable[float | None]) -> float | None:
    valid = [v for v in values if v is not None]
    return float(np.mean(valid)) if valid else None


# -- plots -------------------------------------------------------------------------------
def _log_headroom(ax: Any, low: float, high: float, n_entries: int) -> None:
    """Log y limits with the data in the lower part and room above it for the legend
    (upper right, two columns beyond five entries). Deterministic and cheap, unlike
    mplhep.yscale_legend, which redraws until nothing overlaps."""
    rows = n_entries if n_entries <= 5 else math.ceil(n_entries / 2)
    data_fraction = max(0.4, 0.92 - 0.075 * rows)
    lo, hi = math.log10(low), math.log10(max(high, low * 10))
    ax.set_ylim(low, 10 ** (lo + (hi - lo) / data_fraction))
    ax.legend(fontsize="small" if n_entries <= 5 else "x-small", loc="upper right",
              ncols=1 if n_entries <= 5 else 2)


def _thin(eps_s: np.ndarray, eps_b: np.ndarray, n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """At most ~2n points of a long ROC, dense where eps_B is small (large rejection)."""
    if eps_s.size <= 2 * n:
        return eps_s, eps_b
    idx = np.unique(np.concatenate([np.linspace(0, eps_s.size - 1, n),
                                    np.geomspace(1, eps_s.size - 1, n)]).astype(np.int64))
    return eps_s[idx], eps_b[idx]


def roc_plot_points(eps_s: np.ndarray, eps_b: np.ndarray, n_background: int | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(eps_S, 1/eps_B, is_lower_bound) of a ROC for a rejection plot, eps_S > 0 only.

    Where fewer than one background jet passes (eps_B < 1/N_B, e.g. eps_B = 0 all the way
    for perfectly separated classes) the rejection is N_B, flagged as a lower bound: the
    convention of :func:`background_rejection`. Without ``n_background`` N_B is read off
    the curve as 1 / (smallest step in eps_B): exact unless background jets tie, and never
    more than the true N_B, so the bound stays a bound.
    """
    eps_s, eps_b = np.asarray(eps_s, np.float64), np.asarray(eps_b, np.float64)
    if n_background is None:
        steps = np.diff(np.unique(eps_b))
        n_background = max(1, round(1.0 / steps.min())) if steps.size else 1
    x, y = _thin(eps_s, eps_b)
    keep = x > 0
    x, y = x[keep], y[keep]
    bound = y * n_background < 1.0 - 1e-9
    rejection = np.where(bound, float(n_background), 1.0 / np.where(bound, 1.0, y))
    return x, rejection, bound


def plot_roc(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | Path, *,
             title: str | None = None, working_points: Sequence[float] = WORKING_POINTS,
             signal_label: str = "signal", background_label: str = "background",
             n_background: Mapping[str, int] | None = None) -> Path:
    """Background rejection 1/eps_B (log) against signal efficiency eps_S, one line per
    curve (legend with the AUC), the random tagger dashed and the working points marked.

    Where no background jet passes, a curve is drawn at 1/eps_B = N_B (``n_background``
    per curve name, else read off the curve; see :func:`roc_plot_points`), dashed with
    upward triangles: a lower bound, as in metrics.json. Perfectly separated classes are
    then a dashed line at N_B instead of an empty plot.
    """
    with figure(path, (8, 6.5)) as (_, axes):
        ax = axes[0, 0]
        highest = 10.0
        for k, (name, (eps_s, eps_b)) in enumerate(curves.items()):
            area = auc(eps_s, eps_b)
            n_b = None if n_background is None else n_background.get(name)
            x, y, bound = roc_plot_points(eps_s, eps_b, n_b)
            color = f"C{k}"
            label: str | None = f"{name} (AUC {area:.4f})"
            if y.size:
                highest = max(highest, float(y.max()))
            if (~bound).any():
                ax.plot(x[~bound], y[~bound], lw=2, color=color, label=label)
                label = None
            if bound.any():
                lo, hi = float(x[bound].min()), float(x[bound].max())
                ax.plot([lo, hi], [y[bound][0]] * 2, lw=2, ls="--", color=color,
                        marker="^", ms=9, label=label)
                ax.annotate(rf"$\geq {y[bound][0]:g}$: no {background_label} jet passes",
                            (lo, y[bound][0]), textcoords="offset points", xytext=(6, 7),
                            ha="left", fontsize="x-small", color=color)
        grid = np.linspace(0.01, 1, 200)
        ax.plot(grid, 1 / grid, ls="--", color="grey", lw=1, label="random")
        for eff in working_points:
            ax.axvline(eff, ls=":", color="grey", lw=1)
        ax.set_yscale("log")
        ax.set_xlim(0, 1)
        ax.set_xlabel(rf"{signal_label} efficiency $\varepsilon_S$")
        ax.set_ylabel(rf"{background_label} rejection $1/\varepsilon_B$")
        _log_headroom(ax, 1.0, highest * 1.5, len(curves) + 1)
        if title:
            ax.set_title(title, fontsize="medium")
    return Path(path)


def plot_output_distributions(per_variation: Mapping[str, tuple[np.ndarray, np.ndarray]],
                              path: str | Path, class_names: Sequence[str] | None = None, *,
                              reference: str = "nominal", signal: str | None = None,
                              bins: int | Sequence[float] = 50,
                              title: str | None = None) -> Path:
    """One panel per true class: the distribution of its output (see class_output_scores)
    for every variation, with the JS distance to ``reference`` in the legend (the same
    numbers as shift_metrics with the same ``bins``)."""
    names, n_classes = _class_names(per_variation, reference, class_names)
    edges = _edges(bins, (), (0.0, 1.0))
    scores = _per_variation(per_variation, lambda probs, labels: class_output_scores(
        probs, labels, names, signal))
    xlabel = _score_labels(names, signal)
    ncols = min(n_classes, 3)
    nrows = math.ceil(n_classes / ncols)
    with figure(path, (7.5 * ncols, 6 * nrows), nrows, ncols) as (fig, axes):
        for i, c in enumerate(names):
            _output_panel(axes.flat[i], c, scores, reference, edges, xlabel[c])
        for ax in list(axes.flat)[n_classes:]:
            ax.set_visible(False)
        if title:
            fig.suptitle(title, fontsize="medium")
    return Path(path)


def _score_labels(names: Sequence[str], signal: str | None) -> dict[str, str]:
    """The x label of each class's panel: the signal discriminant (two classes) or p_c."""
    if len(names) != 2:
        return {c: f"$p_{{{c}}}$" for c in names}
    s = names[-1] if signal is None else signal
    b = names[0] if s == names[1] else names[1]
    return {c: f"$p_{{{s}}} / (p_{{{s}}} + p_{{{b}}})$" for c in names}


def _output_panel(ax: Any, c: str, scores: Mapping[str, Mapping[str, np.ndarray]],
                  reference: str, edges: np.ndarray, xlabel: str) -> None:
    """Class ``c``'s output density under every variation (log y), JS distances in the
    legend."""
    import mplhep

    ref = scores[reference][c]
    densities = []
    for k, (v, per_class) in enumerate(scores.items()):
        x = per_class[c]
        if x.size == 0:
            continue
        counts = np.histogram(x, edges)[0] / (x.size * np.diff(edges))
        densities.append(counts)
        mplhep.histplot(counts, edges, ax=ax, label=_output_label(v, x, ref, reference, edges),
                        color=f"C{k}", lw=2.5 if v == reference else 1.5)
    ax.set_yscale("log")
    ax.set_xlim(edges[0], edges[-1])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.set_title(f"{c} jets ({ref.size} in {reference})", fontsize="medium")
    positive = np.concatenate(densities) if densities else np.ones(1)
    positive = positive[positive > 0]
    if positive.size:
        _log_headroom(ax, float(positive.min()) / 2, float(positive.max()), len(densities))


def _output_label(v: str, x: np.ndarray, ref: np.ndarray, reference: str,
                  edges: np.ndarray) -> str:
    if v == reference:
        return f"{v} (reference)"
    return f"{v}: JS {js_distance(x, ref, edges):.3f}" if ref.size else v


_METRIC_LABELS = {"auc": "AUC", "accuracy": "accuracy"}


def plot_metric_vs_fraction(results: Mapping[str, Mapping[float, Values]],
                            path: str | Path, *, metric: str = "auc",
                            ylabel: str | None = None, title: str | None = None,
                            logy: bool | None = None) -> Path:
    """A metric against the labelled fraction (log x), one line per pre-training method.

    ``results``: {method: {fraction: value or [values of several seeds]}}; several values
    plot as mean with the standard deviation as error bar (None: undefined, NaN).
    Rejections default to log y.
    """
    if ylabel is None:
        if metric.startswith("rejection_at_"):
            eff = metric.removeprefix("rejection_at_")
            ylabel = rf"$1/\varepsilon_B$ at $\varepsilon_S$ = {eff}"
        else:
            ylabel = _METRIC_LABELS.get(metric, metric)
    if logy is None:
        logy = metric.startswith("rejection_at_")
    from matplotlib.ticker import NullLocator

    with figure(path, (8, 6.5)) as (_, axes):
        ax = axes[0, 0]
        fractions: set[float] = set()
        for k, (method, by_fraction) in enumerate(results.items()):
            f = np.array(sorted(by_fraction), dtype=np.float64)
            if f.size == 0:
                continue
            if (f <= 0).any() or (f > 1).any():
                raise ValueError(f"{method}: labelled fractions must be in (0, 1], got {f}")
            values = [np.atleast_1d(np.asarray(by_fraction[x], np.float64)) for x in f]
            mean = np.array([v.mean() for v in values])
            err = np.array([v.std() if v.size > 1 else 0.0 for v in values])
            ax.errorbar(f, mean, yerr=err if err.any() else None, marker="os^vDP*X"[k % 8],
                        ms=8, lw=2, capsize=4, label=method, color=f"C{k}")
            fractions.update(f.tolist())
        ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
        if fractions:
            ticks = sorted(fractions)
            ax.set_xticks(ticks, [f"{100 * t:g} %" for t in ticks])
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set_xlim(min(ticks) / 2, max(ticks) * 2)
        ax.set_xlabel("labelled fraction")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize="small")
        if title:
            ax.set_title(title, fontsize="medium")
    return Path(path)

"""Tagger metrics against hand arithmetic: ROC/AUC/rejection with ties and bounds, pairwise
multi-class conventions, JS and Wasserstein distances, shift summaries, and the plots."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from scipy import stats
from scipy.spatial import distance

from resim.train.metrics import (
    auc,
    background_rejection,
    binary_metrics,
    class_output_scores,
    classification_metrics,
    js_distance,
    js_distance_from_histograms,
    plot_metric_vs_fraction,
    plot_output_distributions,
    plot_roc,
    roc_curve,
    roc_curves,
    roc_plot_points,
    shift_metrics,
    wasserstein,
)


def brute_force_auc(sig: np.ndarray, bkg: np.ndarray) -> float:
    """P(s > b) + P(s = b) / 2 by counting every pair."""
    wins = sum(1.0 if s > b else 0.5 if s == b else 0.0 for s, b in itertools.product(sig, bkg))
    return wins / (len(sig) * len(bkg))


def binary(sig: list[float], bkg: list[float]) -> tuple[np.ndarray, np.ndarray]:
    return np.array(sig + bkg), np.array([True] * len(sig) + [False] * len(bkg))


# -- ROC, AUC, rejection ----------------------------------------------------------------
def test_perfect_separation_auc_one_and_rejection_is_the_sample_bound():
    scores, is_sig = binary([0.9, 0.8], [0.2, 0.1, 0.05])
    eps_s, eps_b = roc_curve(scores, is_sig)
    np.testing.assert_allclose(eps_s, [0, 0.5, 1, 1, 1, 1])
    np.testing.assert_allclose(eps_b, [0, 0, 0, 1 / 3, 2 / 3, 1])
    assert auc(eps_s, eps_b) == pytest.approx(1.0)
    m = binary_metrics(scores, is_sig)
    assert m["auc"] == pytest.approx(1.0)
    # eps_B = 0 at both working points: report N_B = 3, flagged as a lower bound
    assert m["rejection_at_0.3"] == 3.0 and m["rejection_at_0.3_is_lower_bound"] is True
    assert m["rejection_at_0.5"] == 3.0 and m["rejection_at_0.5_is_lower_bound"] is True
    json.dumps(m, allow_nan=False)


def test_rejection_plot_points_use_the_lower_bound_where_no_background_passes(tmp_path):
    # perfectly separated: eps_B = 0 wherever eps_S > 0 (but at the last point)
    eps_s, eps_b = roc_curve(*binary([0.9, 0.8], [0.2, 0.1, 0.05]))
    x, y, bound = roc_plot_points(eps_s, eps_b)  # N_B = 3 read off the curve
    np.testing.assert_allclose(x, [0.5, 1, 1, 1, 1])
    np.testing.assert_allclose(y, [3, 3, 3, 1.5, 1])
    assert bound.tolist() == [True, True, False, False, False]
    x, y, bound = roc_plot_points(eps_s, eps_b, n_background=3)
    assert y[bound].tolist() == [3, 3]
    # background jets tied at one score: the read-off N_B is smaller, still a bound
    _, y, bound = roc_plot_points(*roc_curve(*binary([0.9, 0.8], [0.2, 0.2, 0.1])))
    assert y[bound].max() <= 3 and bound.any()
    # nothing to bound on an ordinary curve
    eps_s, eps_b = roc_curve(*binary([0.9, 0.3], [0.5, 0.1]))
    x, y, bound = roc_plot_points(eps_s, eps_b)
    assert not bound[1:].any() and y[-1] == 1.0
    # the plot draws the perfect tagger instead of nothing
    path = plot_roc({"top_vs_qcd": roc_curve(*binary([0.9, 0.8], [0.2, 0.1, 0.05]))},
                    tmp_path / "perfect.png", n_background={"top_vs_qcd": 3})
    empty = plot_roc({}, tmp_path / "empty.png")
    assert path.read_bytes().startswith(PNG_MAGIC)
    assert path.stat().st_size > empty.stat().st_size + 1000


def test_reversed_scores_auc_zero_and_rejection_one():
    scores, is_sig = binary([0.1, 0.2], [0.8, 0.9])
    eps_s, eps_b = roc_curve(scores, is_sig)
    assert auc(eps_s, eps_b) == pytest.approx(0.0)
    m = binary_metrics(scores, is_sig)
    assert m["auc"] == pytest.approx(0.0)
    assert m["rejection_at_0.5"] == pytest.approx(1.0)
    assert m["rejection_at_0.5_is_lower_bound"] is False


def test_alternating_four_plus_four_by_hand():
    # sorted: S B S B S B S B -> staircase in steps of 1/4; AUC = (4+3+2+1)/16
    scores, is_sig = binary([0.9, 0.7, 0.5, 0.3], [0.8, 0.6, 0.4, 0.2])
    eps_s, eps_b = roc_curve(scores, is_sig)
    np.testing.assert_allclose(eps_s, [0, .25, .25, .5, .5, .75, .75, 1, 1])
    np.testing.assert_allclose(eps_b, [0, 0, .25, .25, .5, .5, .75, .75, 1])
    m = binary_metrics(scores, is_sig, working_points=(0.3, 0.5, 0.6))
    assert m["auc"] == pytest.approx(10 / 16)
    # at eps_S = 0.3 and 0.5 the lowest reachable eps_B is 1/4, at 0.6 it is 1/2
    assert m["rejection_at_0.3"] == pytest.approx(4.0)
    assert m["rejection_at_0.5"] == pytest.approx(4.0)
    assert m["rejection_at_0.6"] == pytest.approx(2.0)
    assert not any(m[f"rejection_at_{e}_is_lower_bound"] for e in ("0.3", "0.5", "0.6"))


def test_ties_are_one_diagonal_segment_and_count_half():
    # one signal ties with three background jets at 0.5
    scores, is_sig = binary([0.9, 0.5], [0.5, 0.5, 0.5, 0.1])
    eps_s, eps_b = roc_curve(scores, is_sig)
    np.testing.assert_allclose(eps_s, [0, 0.5, 1, 1])
    np.testing.assert_allclose(eps_b, [0, 0, 0.75, 1])
    # pairs: 0.9 beats 4; 0.5 ties 3 (1.5) and beats 1 -> 6.5 / 8
    assert auc(eps_s, eps_b) == pytest.approx(6.5 / 8)
    assert auc(eps_s, eps_b) == pytest.approx(brute_force_auc([0.9, 0.5], [0.5, 0.5, 0.5, 0.1]))
    # eps_S = 0.75 lies halfway along the tie segment: eps_B = 0.375 (a randomised cut)
    rej, bound = background_rejection(eps_s, eps_b, 0.75, n_background=4)
    assert rej == pytest.approx(1 / 0.375) and not bound
    # order of the input inside a tie block must not matter
    perm = np.array([5, 1, 3, 0, 4, 2])
    assert roc_curve(scores[perm], is_sig[perm])[1].tolist() == eps_b.tolist()


def test_interpolated_eps_b_below_one_background_jet_is_a_bound():
    scores, is_sig = binary([0.9, 0.5], [0.5, 0.1])
    eps_s, eps_b = roc_curve(scores, is_sig)  # (0,0) (0.5,0) (1,0.5) (1,1)
    # at eps_S = 0.6 the segment gives eps_B = 0.1 < 1/N_B = 0.5: report 2, flagged
    assert background_rejection(eps_s, eps_b, 0.6, n_background=2) == (2.0, True)


def test_auc_equals_mann_whitney_with_many_ties():
    rng = np.random.default_rng(3)
    sig = rng.integers(0, 8, 300).astype(float)
    bkg = rng.integers(0, 6, 500).astype(float)
    scores, is_sig = binary(sig.tolist(), bkg.tolist())
    u = stats.mannwhitneyu(sig, bkg).statistic
    assert auc(*roc_curve(scores, is_sig)) == pytest.approx(u / (sig.size * bkg.size))


def test_rejection_matches_analytic_curve():
    # exact quantiles: background uniform on [0, 1], signal with CDF t^2 (eps_S = 1 - t^2,
    # eps_B = 1 - t): 1/eps_B = 1 / (1 - sqrt(1 - eps_S)); AUC = E[sqrt U] = 2/3
    n = 20000
    u = (np.arange(n) + 0.5) / n
    scores, is_sig = binary(np.sqrt(u).tolist(), u.tolist())
    m = binary_metrics(scores, is_sig)
    assert m["auc"] == pytest.approx(2 / 3, abs=1e-4)
    for eff in (0.3, 0.5):
        assert m[f"rejection_at_{eff}"] == pytest.approx(1 / (1 - math.sqrt(1 - eff)), rel=1e-3)


def test_roc_rejects_bad_input():
    with pytest.raises(ValueError, match="signal and background"):
        roc_curve([0.1, 0.2], [True, True])
    with pytest.raises(ValueError, match="NaN"):
        roc_curve([0.1, np.nan], [True, False])
    with pytest.raises(ValueError, match="0/1"):
        roc_curve([0.1, 0.2], [2, 0])
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        background_rejection([0, 1], [0, 1], 0.0, 1)


# -- classification metrics -------------------------------------------------------------
def test_binary_classification_metrics_accuracy_and_signal_choice():
    probs = np.array([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7], [0.45, 0.55], [0.1, 0.9]])
    labels = np.array([0, 1, 1, 0, 1])
    m = classification_metrics(probs, labels, ["qcd", "top"])
    # argmax: 0, 0, 1, 1, 1 -> correct: yes, no, yes, no, yes
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["confusion"] == [[1, 1], [1, 2]]
    assert m["class_counts"] == {"qcd": 2, "top": 3}
    assert m["signal"] == "top" and m["background"] == "qcd"
    # top scores 0.4, 0.7, 0.9 vs qcd 0.2, 0.55: wins 1 + 2 + 2 of 6
    assert m["auc"] == pytest.approx(5 / 6)
    assert m["auc"] == m["pairs"]["top_vs_qcd"]["auc"] == m["macro"]["auc"]
    # both top jets above 0.55 pass before any QCD jet: eps_B = 0, bound N_B = 2
    assert m["rejection_at_0.5"] == 2.0 and m["rejection_at_0.5_is_lower_bound"]
    # naming qcd the signal: score p_qcd / (p_qcd + p_top), the same AUC (one-vs-one is
    # symmetric), but now the rejection is of top jets: bound N_B = 3
    m_qcd = classification_metrics(probs, labels, ["qcd", "top"], signal="qcd")
    assert list(m_qcd["pairs"]) == ["qcd_vs_top"] and m_qcd["signal"] == "qcd"
    assert m_qcd["auc"] == pytest.approx(5 / 6)
    assert m_qcd["rejection_at_0.5"] == 3.0 and m_qcd["rejection_at_0.5_is_lower_bound"]
    # 1-D input is P(signal)
    m_1d = classification_metrics(probs[:, 1], labels, ["qcd", "top"])
    assert m_1d["auc"] == m["auc"] and m_1d["accuracy"] == m["accuracy"]
    json.dumps(m, allow_nan=False)


def test_multiclass_pairs_use_the_score_ratio_on_the_two_classes_only():
    names = ["a", "b", "c"]
    probs = np.array([
        [0.1, 0.2, 0.7],  # a: b/(a+b) = 0.667, raw p_b = 0.2
        [0.6, 0.3, 0.1],  # a: 0.333
        [0.5, 0.4, 0.1],  # b: b/(a+b) = 0.444, raw p_b = 0.4
        [0.2, 0.7, 0.1],  # b: 0.778
        [0.1, 0.1, 0.8],  # c
        [0.3, 0.1, 0.6],  # c
    ])
    labels = np.array([0, 0, 1, 1, 2, 2])
    m = classification_metrics(probs, labels, names)
    assert list(m["pairs"]) == ["b_vs_a", "c_vs_a", "c_vs_b"]  # later class is the signal
    pair = m["pairs"]["b_vs_a"]
    assert (pair["n_signal"], pair["n_background"]) == (2, 2)
    # ratio scores: b {0.444, 0.778} vs a {0.667, 0.333}: wins 1 + 2 of 4 (raw p_b would give 1)
    assert pair["auc"] == pytest.approx(3 / 4)
    # c vs a: c/(a+c) c {0.889, 0.667} vs a {0.875, 0.143}: 2 + 1 of 4
    assert m["pairs"]["c_vs_a"]["auc"] == pytest.approx(3 / 4)
    # c vs b: c {0.889, 0.857} vs b {0.2, 0.125}: 1
    assert m["pairs"]["c_vs_b"]["auc"] == pytest.approx(1.0)
    assert m["macro"]["n_pairs"] == 3
    assert m["auc"] == m["macro"]["auc"] == pytest.approx((0.75 + 0.75 + 1.0) / 3)
    assert m["rejection_at_0.5"] == pytest.approx(np.mean(
        [m["pairs"][p]["rejection_at_0.5"] for p in m["pairs"]]))
    assert m["signal"] is None and "mean over 3 class pairs" in m["definition"]
    # argmax: c a a b c c -> 4 of 6
    assert m["accuracy"] == pytest.approx(4 / 6)
    json.dumps(m, allow_nan=False)
    # the curves for plot_roc are the same pairs with the same scores
    curves = roc_curves(probs, labels, names)
    assert list(curves) == list(m["pairs"])
    for name, (eps_s, eps_b) in curves.items():
        assert auc(eps_s, eps_b) == pytest.approx(m["pairs"][name]["auc"])
    with_signal = roc_curves(probs, labels, names, signal="b")
    assert auc(*with_signal["b_vs_all"]) == pytest.approx(
        classification_metrics(probs, labels, names, signal="b")["auc"])


def test_multiclass_named_signal_is_one_vs_rest_on_p_signal():
    names = ["a", "b", "c"]
    probs = np.array([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1], [0.5, 0.4, 0.1],
                      [0.2, 0.7, 0.1], [0.1, 0.1, 0.8], [0.3, 0.1, 0.6]])
    labels = np.array([0, 0, 1, 1, 2, 2])
    m = classification_metrics(probs, labels, names, signal="b",
                               pairs=[("b", "a"), ("b", "c")])
    assert list(m["pairs"]) == ["b_vs_a", "b_vs_c"]
    # p_b: b {0.4, 0.7} vs rest {0.2, 0.3, 0.1, 0.1}: all win
    assert m["auc"] == pytest.approx(1.0)
    assert m["background"] == ["a", "c"] and "all other classes" in m["definition"]


def test_missing_class_gives_null_pair_and_is_left_out_of_the_mean():
    probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1]])
    m = classification_metrics(probs, np.array([0, 1, 1]), ["a", "b", "c"])
    assert m["pairs"]["c_vs_a"]["auc"] is None and m["pairs"]["c_vs_a"]["n_signal"] == 0
    assert m["macro"]["n_pairs"] == 1 and m["auc"] == pytest.approx(1.0)
    json.dumps(m, allow_nan=False)


def test_classification_metrics_errors_name_the_problem():
    probs = np.array([[0.5, 0.5], [0.2, 0.8]])
    with pytest.raises(ValueError, match="class_names names 3"):
        classification_metrics(probs, np.array([0, 1]), ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\)"):
        classification_metrics(probs, np.array([0, 2]), ["a", "b"])
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        classification_metrics(probs * 3, np.array([0, 1]), ["a", "b"])
    with pytest.raises(ValueError, match="'x' is not a class"):
        classification_metrics(probs, np.array([0, 1]), ["a", "b"], signal="x")


# -- distances ----------------------------------------------------------------------------
def test_js_distance_identical_disjoint_symmetric():
    rng = np.random.default_rng(0)
    x = rng.random(500)
    assert js_distance(x, x, bins=20) == pytest.approx(0.0, abs=1e-12)
    assert js_distance(x * 0.4, 0.6 + x * 0.4, bins=10, range=(0, 1)) == pytest.approx(1.0)
    y = rng.random(300) ** 2
    assert js_distance(x, y, 25) == pytest.approx(js_distance(y, x, 25))


def test_js_distance_by_hand_and_against_scipy():
    # histograms (1/2, 1/2) and (1, 0): M = (3/4, 1/4);
    # JSD = [1/2 log2(2/3) + 1/2 log2(2) + log2(4/3)] / 2 = 0.311278
    expected = math.sqrt((0.5 * math.log2(2 / 3) + 0.5 + math.log2(4 / 3)) / 2)
    assert expected == pytest.approx(0.557923, abs=1e-6)
    assert js_distance([0.1, 0.9], [0.1, 0.2], bins=[0, 0.5, 1]) == pytest.approx(expected)
    rng = np.random.default_rng(1)
    p, q = rng.random(8), rng.random(8)
    assert js_distance_from_histograms(p, q) == pytest.approx(
        distance.jensenshannon(p, q, base=2))


def test_js_distance_refuses_values_outside_the_edges():
    with pytest.raises(ValueError, match="1 of 2 q_scores lie outside"):
        js_distance([0.1, 0.2], [0.1, 1.5], bins=[0, 0.5, 1])


def test_wasserstein_by_hand_and_against_scipy():
    assert wasserstein([0.0], [1.0]) == pytest.approx(1.0)
    assert wasserstein([0.0, 1.0], [0.0, 1.0]) == 0.0
    rng = np.random.default_rng(2)
    p, q = rng.normal(size=137), rng.normal(0.3, 2.0, size=211)
    assert wasserstein(p, q) == pytest.approx(stats.wasserstein_distance(p, q))
    assert wasserstein(q, p) == pytest.approx(wasserstein(p, q))


# -- shift --------------------------------------------------------------------------------
def shifted_samples() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    # no score on a bin edge (multiples of 0.1): the JS comparison below is exact
    nominal = np.array([0.93, 0.75, 0.55, 0.35, 0.85, 0.65, 0.45, 0.25])  # alternating: 10/16
    shifted = np.array([0.95, 0.87, 0.83, 0.75, 0.45, 0.35, 0.25, 0.15])  # separated: AUC 1
    return {"nominal": (np.stack([1 - nominal, nominal], 1), labels),
            "fsr_up": (np.stack([1 - shifted, shifted], 1), labels)}


def test_shift_metrics_deltas_and_distances():
    per_variation = shifted_samples()
    out = shift_metrics(per_variation, class_names=["qcd", "top"], bins=10)
    assert out["reference"] == "nominal" and len(out["bin_edges"]) == 11
    ref, var = out["variations"]["nominal"], out["variations"]["fsr_up"]
    assert ref["delta"]["auc"] == 0.0 and ref["js_distance"] == {"qcd": 0.0, "top": 0.0}
    assert var["delta"]["auc"] == pytest.approx(1 - 10 / 16)
    assert var["relative_delta"]["auc"] == pytest.approx((1 - 10 / 16) / (10 / 16))
    # accuracy (argmax = cut at 0.5): nominal top 0.93, 0.75, 0.55 + qcd 0.45, 0.25 = 5/8
    assert var["delta"]["accuracy"] == pytest.approx(1.0 - 5 / 8)
    # rejection at 0.5: nominal 4 (1/4 of qcd passes), fsr_up bounded at N_B = 4 -> 0
    assert var["delta"]["rejection_at_0.5"] == pytest.approx(0.0)
    assert var["metrics"]["rejection_at_0.5_is_lower_bound"] is True
    assert var["delta"]["pairs"]["top_vs_qcd"]["auc"] == pytest.approx(1 - 10 / 16)
    edges = np.linspace(0, 1, 11)
    for c, i in (("qcd", 0), ("top", 1)):
        nominal_scores = per_variation["nominal"][0][per_variation["nominal"][1] == i, 1]
        shifted_scores = per_variation["fsr_up"][0][per_variation["fsr_up"][1] == i, 1]
        assert var["js_distance"][c] == pytest.approx(
            js_distance(shifted_scores, nominal_scores, edges))
        assert var["wasserstein"][c] == pytest.approx(
            stats.wasserstein_distance(shifted_scores, nominal_scores))
    assert var["js_distance"]["qcd"] > 0 and var["js_distance"]["top"] > 0
    assert var["js_distance_mean"] == pytest.approx(np.mean(list(var["js_distance"].values())))
    json.dumps(out, allow_nan=False)


def test_shift_metrics_multiclass_uses_own_class_probability():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 3, 600)
    logits = rng.normal(size=(600, 3))
    logits[np.arange(600), labels] += 2.0
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    same = shift_metrics({"nominal": (p, labels), "seed": (p.copy(), labels)}, bins=20)
    assert same["variations"]["seed"]["js_distance"] == {"0": 0.0, "1": 0.0, "2": 0.0}
    assert same["variations"]["seed"]["delta"]["auc"] == 0.0
    scores = class_output_scores(p, labels, ["0", "1", "2"])
    np.testing.assert_array_equal(scores["1"], p[labels == 1, 1])


def test_shift_metrics_errors_name_the_variation():
    with pytest.raises(KeyError, match="'nominal' not among the variations"):
        shift_metrics({"seed": shifted_samples()["fsr_up"]})
    nominal = shifted_samples()["nominal"]
    three_columns = (np.full((2, 3), 1 / 3), np.array([0, 1]))
    with pytest.raises(ValueError, match="variation 'vincia': probs has shape"):
        shift_metrics({"nominal": nominal, "vincia": three_columns})


# -- plots --------------------------------------------------------------------------------
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_plots_write_pngs(tmp_path):
    rng = np.random.default_rng(5)
    n = 4000
    labels = np.r_[np.zeros(n, int), np.ones(n, int)]
    per_variation = {}
    curves = {}
    for k, name in enumerate(["nominal", "seed", "fsr_up", "vincia"]):
        s = 1 / (1 + np.exp(-(rng.normal(2.0 - 0.3 * k, 1.5, n))))
        b = 1 / (1 + np.exp(-(rng.normal(-2.0, 1.5, n))))
        top = np.r_[b, s]
        per_variation[name] = (np.stack([1 - top, top], 1), labels)
        curves[name] = roc_curve(top, labels == 1)
    paths = [
        plot_roc(curves, tmp_path / "roc.png", signal_label="top", background_label="QCD"),
        plot_output_distributions(per_variation, tmp_path / "outputs.png", ["QCD", "top"]),
        plot_metric_vs_fraction({"RS3L": {0.01: [0.90, 0.91], 0.1: 0.94, 1.0: 0.96},
                                 "supervised": {0.01: 0.85, 0.1: 0.92, 1.0: 0.96}},
                                tmp_path / "sub" / "auc_vs_fraction.png"),
        plot_metric_vs_fraction({"RS3L": {0.01: 40.0, 1.0: 300.0}},
                                tmp_path / "rej.png", metric="rejection_at_0.3"),
    ]
    # three classes: one panel each
    probs3 = rng.dirichlet([1, 1, 1], size=300)
    paths.append(plot_output_distributions(
        {"nominal": (probs3, rng.integers(0, 3, 300)), "fsr_up": (probs3, rng.integers(0, 3, 300))},
        tmp_path / "outputs3.png", ["q", "W", "top"]))
    for path in paths:
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, path


def test_js_floor_is_the_counting_noise_of_two_samples_of_one_distribution() -> None:
    """The expected JS distance of two independent samples from one distribution matches
    the second-order formula, for several sizes and bin counts."""
    from resim.train.metrics import js_distance, js_floor

    rng = np.random.default_rng(5)
    for n_a, n_b, bins in ((200, 200, 14), (1000, 300, 30), (3000, 3000, 10)):
        edges = np.linspace(0, 1, bins + 1)
        seen = [js_distance(rng.beta(2, 5, n_a), rng.beta(2, 5, n_b), edges)
                for _ in range(300)]
        rms = float(np.sqrt(np.mean(np.square(seen))))
        assert rms == pytest.approx(js_floor(n_a, n_b, bins), rel=0.08), (n_a, n_b, bins)
    assert js_floor(100, 100, 1) == 0.0 and math.isnan(js_floor(0, 5, 3))

"""The study report's statistics against hand arithmetic and known distributions: means
and spreads over seeds, the bootstrap (binomial error of an accuracy, pairing, skipped
resamples), Delta's combined error and significance, ResultTable's paired differences,
the shift statistics, how numbers are written, and the sentences computed from them.
Fast: no data set, no training."""

from __future__ import annotations

import math

import numpy as np
import pytest

from resim.study.findings import findings
from resim.study.spec import Study
from resim.study.statistics import (
    Delta,
    ResultTable,
    bootstrap,
    finite_sd,
    mean,
    numbers,
    robustness,
    sd,
    shift_numbers,
)
from resim.study.tables import fmt, main_table, signed

CLASSES = ["qcd", "top"]


def study(**kw) -> Study:
    settings = dict(source="s.toml", text="", samples=(), variations=("nominal", "seed", "fsr_up"),
                    reference="nominal", classes={"qcd": ("q",), "top": ("top",)},
                    objectives={"rs3l": "rs3l_part"}, seeds=(0, 1), bootstrap=0)
    return Study(**{**settings, **kw})


def outputs(n: int, correct: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(probs, labels) of ``n`` jets, half of each class, exactly ``correct`` of them on
    the right side of 0.5 (scores spread, so the AUC is not trivial)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    right = np.zeros(n, bool)
    right[rng.permutation(n)[:correct]] = True
    p_top = np.where(labels == 1, 0.5, 0.0) + rng.uniform(0.01, 0.49, n)  # right side
    p_top = np.where(right, p_top, 1.0 - p_top)
    return np.stack([1 - p_top, p_top], axis=1), labels


def run(auc: float, probs: np.ndarray, labels: np.ndarray, group: np.ndarray | None = None,
        bound: bool = False, shift: dict | None = None) -> dict:
    """What report.collect holds per (row, fraction, seed), with a metrics.json of AUC
    ``auc`` (the table's values come from it; the bootstrap from probs and labels)."""
    metrics = {"accuracy": 0.5, "auc": auc, "rejection_at_0.3": 10.0, "rejection_at_0.5": 5.0,
               "auc_is_lower_bound": bound,
               "pairs": {"top_vs_qcd": {"auc": auc, "rejection_at_0.3": 10.0,
                                        "rejection_at_0.5": 5.0}}}
    return {"metrics": metrics, "probs": probs, "labels": labels,
            "group": np.arange(len(labels)) if group is None else group,
            "class_names": CLASSES, "shift": shift}


# --------------------------------------------------------------------------- basics


def test_mean_and_spreads_by_hand() -> None:
    assert mean([1.0, None, 3.0]) == 2.0
    assert mean([None]) is None
    assert sd([1.0, 2.0, None, 3.0]) == pytest.approx(1.0)  # sample sd, n - 1
    assert sd([4.0, None]) is None  # one value: no spread
    assert finite_sd(np.array([1.0, 2.0, np.nan, 3.0])) == pytest.approx(1.0)
    assert finite_sd(np.array([1.0, np.nan])) is None
    assert finite_sd(None) is None


def test_numbers_of_a_metrics_dict() -> None:
    got = numbers({"accuracy": 0.9, "auc": 0.95, "pairs": {"w_vs_qcd": {
        "auc": 0.8, "rejection_at_0.3": 20.0, "rejection_at_0.5": 7.0, "signal": "w"}}})
    assert got == {"accuracy": 0.9, "auc": 0.95, "rejection_at_0.3": None,
                   "rejection_at_0.5": None, "w_vs_qcd:auc": 0.8,
                   "w_vs_qcd:rejection_at_0.3": 20.0, "w_vs_qcd:rejection_at_0.5": 7.0}


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_error_of_an_accuracy_is_binomial() -> None:
    """800 of 1000 jets right: the resampled accuracy scatters by sqrt(a (1 - a) / N)."""
    probs, labels = outputs(1000, 800)
    boot = bootstrap([(probs, labels)], CLASSES, 400)
    assert boot["accuracy"].shape == (400,)
    assert np.mean(boot["accuracy"]) == pytest.approx(0.8, abs=0.003)
    binomial = math.sqrt(0.8 * 0.2 / 1000)
    assert finite_sd(boot["accuracy"]) == pytest.approx(binomial, rel=0.12)


def test_bootstrap_is_seeded_paired_and_averaged_over_runs() -> None:
    a, b = outputs(300, 240, seed=1), outputs(300, 200, seed=2)
    b = (b[0], a[1])  # the same test jets (labels) for both classifiers
    boot_a = bootstrap([a], CLASSES, 50)
    assert all(np.array_equal(boot_a[k], v) for k, v in bootstrap([a], CLASSES, 50).items())
    # the same resampled jets for every classifier: identical ones differ by exactly 0
    same = bootstrap([a], CLASSES, 50)["auc"] - boot_a["auc"]
    assert not same.any()
    # several runs (seeds): each resample's metric is the mean over the runs
    both = bootstrap([a, b], CLASSES, 50)
    boot_b = bootstrap([b], CLASSES, 50)
    np.testing.assert_allclose(both["accuracy"], (boot_a["accuracy"] + boot_b["accuracy"]) / 2)
    assert set(both) == {"accuracy", "auc", "rejection_at_0.3", "rejection_at_0.5",
                         "top_vs_qcd:auc", "top_vs_qcd:rejection_at_0.3",
                         "top_vs_qcd:rejection_at_0.5"}


def test_bootstrap_resamples_without_a_class_have_no_auc() -> None:
    """One top among four jets: a resample misses it with probability (3/4)^4 = 0.32; its
    AUC is undefined (NaN, which finite_sd ignores), its accuracy is not."""
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.2, 0.8]])
    labels = np.array([0, 0, 0, 1])
    boot = bootstrap([(probs, labels)], CLASSES, 400)
    assert len(boot["accuracy"]) == len(boot["auc"]) == 400
    assert np.isfinite(boot["accuracy"]).all() and np.all(boot["accuracy"] == 1.0)
    missing = np.isnan(boot["auc"]).mean()
    assert missing == pytest.approx(0.75 ** 4, abs=0.07)  # 5 sigma of 400 draws
    assert np.all(boot["auc"][~np.isnan(boot["auc"])] == 1.0)
    assert finite_sd(boot["auc"]) == 0.0
    # outputs the metrics refuse (not probabilities): every resample is dropped
    assert bootstrap([(probs * 2, labels)], CLASSES, 10) == {}


# --------------------------------------------------------------------------- Delta


def test_delta_combines_its_errors_and_says_when_it_is_significant() -> None:
    d = Delta(0.05, stat=0.01, seeds=0.02, n=4)
    assert d.error == pytest.approx(math.sqrt(0.01 ** 2 + 0.02 ** 2 / 4))  # 0.01414
    assert d.significant(+1) and not d.significant(-1)
    assert d.text() == "**+0.050 ± 0.010 [0.020]**"
    assert Delta(-0.05, 0.01).significant(-1)
    small = Delta(0.02, stat=0.01, seeds=0.04, n=4)  # error sqrt(1e-4 + 4e-4) = 0.0224
    assert not small.significant(+1) and small.text() == "+0.020 ± 0.010 [0.040]"
    assert Delta(0.05).error is None and not Delta(0.05).significant(+1)  # no stat error
    assert Delta(0.05).text() == "+0.050"
    assert Delta().text() == "—"


# --------------------------------------------------------------------------- the table


def table(boot: int = 0, same_groups: bool = True) -> ResultTable:
    """scratch: AUC 0.80, 0.82 over seeds 0, 1; rs3l: 0.85, 0.89 (metrics.json). The
    test jets: scratch gets 260 of 400 right, rs3l the same and 60 more (correlated, as
    two classifiers of the same jets are)."""
    probs, labels = outputs(400, 260, seed=3)
    wrong = np.flatnonzero(np.argmax(probs, axis=1) != labels)[:60]
    better = probs.copy()
    better[wrong] = better[wrong, ::-1]
    jets = {"scratch": (probs, labels), "rs3l": (better, labels)}
    aucs = {"scratch": (0.80, 0.82), "rs3l": (0.85, 0.89)}
    runs = {}
    for r in ("scratch", "rs3l"):
        for s in (0, 1):
            group = np.arange(400) if same_groups or r == "scratch" else np.arange(400) + 1
            runs[r, 1.0, s] = run(aucs[r][s], jets[r][0], labels, group, bound=(r, s) == (
                "rs3l", 1))
    return ResultTable(study(bootstrap=boot), runs)


def test_table_means_spreads_and_bounds_over_seeds() -> None:
    t = table()
    assert t.rows == ["scratch", "rs3l"] and t.fractions == [1.0]
    assert t.pairs == ["top_vs_qcd"] and t.n_test[("rs3l", 1.0)] == 400
    assert t.value["rs3l", 1.0]["auc"] == pytest.approx(0.87)
    assert t.spread["rs3l", 1.0]["auc"] == pytest.approx(math.sqrt(2) * 0.02)  # sd(.85, .89)
    assert t.bound["rs3l", 1.0]["auc"] and not t.bound["scratch", 1.0]["auc"]
    assert t.error["rs3l", 1.0] == {}  # bootstrap = 0: no statistical errors


def test_table_delta_by_hand() -> None:
    t = table()
    d = t.delta("rs3l", 1.0)
    assert d.value == pytest.approx(0.87 - 0.81)
    assert d.seeds == pytest.approx(math.sqrt(2) * 0.01)  # sd of (0.05, 0.07)
    assert d.n == 2 and d.stat is None  # no bootstrap: no paired error
    assert t.delta("scratch", 1.0) == Delta()  # the baseline against itself
    assert t.delta("rs3l", 0.5) == Delta()  # no such fraction
    assert t.delta("scratch", 1.0, base="rs3l").value == pytest.approx(-0.06)


def test_table_delta_error_is_the_paired_bootstrap() -> None:
    t = table(boot=60)
    d = t.delta("rs3l", 1.0)
    a = bootstrap([(t.runs["rs3l", 1.0, s]["probs"], t.runs["rs3l", 1.0, s]["labels"])
                   for s in (0, 1)], CLASSES, 60)
    b = bootstrap([(t.runs["scratch", 1.0, s]["probs"], t.runs["scratch", 1.0, s]["labels"])
                   for s in (0, 1)], CLASSES, 60)
    assert d.stat == pytest.approx(np.std(a["auc"] - b["auc"], ddof=1))
    # pairing removes the shared fluctuation: smaller than the errors added in quadrature
    assert d.stat < math.hypot(np.std(a["auc"], ddof=1), np.std(b["auc"], ddof=1))
    assert t.error["rs3l", 1.0]["auc"] == pytest.approx(np.std(a["auc"], ddof=1))
    # tested on other groups: no paired error
    assert table(boot=60, same_groups=False).delta("rs3l", 1.0).stat is None


def test_shift_statistics_over_seeds() -> None:
    def shift(js: float, dauc: float) -> dict:
        return {"variations": {"fsr_up": {"js_distance_mean": js, "js_floor_mean": 0.05,
                                          "delta": {"auc": dauc, "accuracy": -0.01}},
                               "seed": {"js_distance_mean": 0.06, "js_floor_mean": 0.05,
                                        "delta": {"auc": 0.0, "accuracy": 0.0}}}}

    assert shift_numbers(shift(0.1, -0.02))["fsr_up"] == {"js": 0.1, "dauc": -0.02,
                                                          "dacc": -0.01, "floor": 0.05}
    assert shift_numbers(None) == {}
    t = table()
    for s, js in ((0, 0.1), (1, 0.3)):
        t.runs["rs3l", 1.0, s]["shift"] = shift(js, -0.02 * (s + 1))
    rob = robustness(t)
    assert set(rob) == {("rs3l", 1.0)}  # the baseline has no shift evaluation
    js_mean, js_sd = rob["rs3l", 1.0]["fsr_up"]["js"]
    assert js_mean == pytest.approx(0.2) and js_sd == pytest.approx(math.sqrt(2) * 0.1)
    assert rob["rs3l", 1.0]["fsr_up"]["dauc"][0] == pytest.approx(-0.03)
    assert rob["rs3l", 1.0]["seed"]["js"] == (pytest.approx(0.06), pytest.approx(0.0))

    lines = findings(t, rob)
    assert lines[0] == ("At 100 % of the labels the highest AUC is rs3l's (0.870); "
                        "significantly above scratch (ΔAUC beyond twice its error, test "
                        "sample and seeds combined): none; below: none.")
    # the seed variation is the floor: subtracted in brackets (0.2 - 0.06)
    assert lines[1] == ("At 100 %, mean JS distance to nominal over fsr_up (in brackets: "
                        "minus the seed variation's, the statistical floor): rs3l 0.200 "
                        "(+0.140); mean ΔAUC over them: rs3l -0.030.")


# --------------------------------------------------------------------------- numbers


def test_how_numbers_are_written() -> None:
    assert fmt(0.91234, 0.01111, 0.00612) == "0.912 ± 0.011 [0.006]"
    assert fmt(12.345, 1.23, bound=True) == "≥ 12.3 ± 1.2"
    assert fmt(123.4, 5.6) == "123 ± 6"
    assert fmt(None) == fmt(math.nan) == "n/a"
    assert signed(0.05, 0.01) == "**+0.050 ± 0.010**"
    assert signed(-0.01, 0.01) == "-0.010 ± 0.010"
    assert signed(None, 0.1) == "—"
    lines = main_table(table()).splitlines()
    assert lines[0].startswith("| objective | labelled | accuracy | AUC |")
    assert lines[3] == ("| rs3l | 100 % | 0.500 [0.000] | ≥ 0.870 [0.028] | 10.0 [0.0] | "
                        "5.0 [0.0] | +0.060 [0.014] |")

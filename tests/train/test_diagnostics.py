"""The representation probes (resim.train.diagnostics) against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from resim.train.diagnostics import (
    alignment,
    effective_rank,
    knn_accuracy,
    linear_probe,
    linear_r2,
    uniformity,
)


def test_effective_rank_of_known_covariances() -> None:
    rng = np.random.default_rng(0)
    # Exactly isotropic in 4 of 8 dimensions: rows ±e_i give covariance ∝ diag(1,1,1,1,0..)
    eye = np.eye(8)[:4]
    z = np.concatenate([eye, -eye])
    assert effective_rank(z) == pytest.approx(4.0)
    # Eigenvalues (4, 1, 1, 1, 1) in an orthonormal basis: p = (1/2, 1/8 x 4),
    # entropy = 1/2 ln 2 + 4/8 ln 8 = 2 ln 2, effective rank 4.
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    base = np.concatenate([np.diag(np.sqrt([4.0, 1, 1, 1, 1])),
                           -np.diag(np.sqrt([4.0, 1, 1, 1, 1]))]) @ q.T
    assert effective_rank(base) == pytest.approx(math.exp(2 * math.log(2)))
    # a line: rank 1; a constant: 0
    t = rng.normal(size=(50, 1))
    assert effective_rank(t * rng.normal(size=(1, 6))) == pytest.approx(1.0)
    assert effective_rank(np.ones((10, 3))) == 0.0


def test_knn_on_separable_and_on_hand_made_data() -> None:
    rng = np.random.default_rng(1)
    # two classes along different directions: every neighbour has the query's class
    a = np.array([1.0, 0.0, 0.0]) + 0.05 * rng.normal(size=(40, 3))
    b = np.array([0.0, 1.0, 0.0]) + 0.05 * rng.normal(size=(40, 3))
    memory, labels = np.concatenate([a, b]), np.repeat([0, 1], 40)
    queries = np.concatenate([a[:5] + 0.01, b[:5] - 0.01])
    assert knn_accuracy(memory, labels, queries, np.repeat([0, 1], 5)) == \
        {5: 1.0, 10: 1.0, 20: 1.0}
    # by hand: memory at angles 0, 10, 20, 90, 100 degrees, labels 0, 0, 1, 1, 1; query
    # at 5 degrees: k=1 -> 0; k=3 -> {0, 0, 1} -> 0; k=5 -> {0,0,1,1,1} -> 1
    angles = np.radians([0, 10, 20, 90, 100])
    memory = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    query = np.array([[np.cos(np.radians(5)), np.sin(np.radians(5))]])
    got = knn_accuracy(memory, np.array([0, 0, 1, 1, 1]), query, np.array([0]), ks=(1, 3, 5))
    assert got == {1: 1.0, 3: 1.0, 5: 0.0}
    # a tie (k=2: one of each) goes to the more similar neighbour; cosine ignores length
    got = knn_accuracy(memory[[0, 2]] * [[7.0], [0.1]], np.array([0, 1]), query, np.array([1]),
                       ks=(2,))
    assert got == {2: 0.0}
    # excluded pairs do not vote: without the two nearest, the query's neighbours are 1s
    exclude = np.array([[True, True, False, False, False]])
    assert knn_accuracy(memory, np.array([0, 0, 1, 1, 1]), query, np.array([1]), ks=(1,),
                        exclude=exclude) == {1: 1.0}


def test_linear_probe_separates_a_linear_boundary_and_not_noise() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(600, 5))
    y = (x[:, 0] + 0.5 * x[:, 3] > 0).astype(int)
    probe = linear_probe(x[:400], y[:400], x[400:], y[400:], ["a", "b"])
    assert probe["accuracy"] > 0.95 and probe["auc"] > 0.99
    noise = linear_probe(x[:400], rng.integers(0, 2, 400), x[400:], rng.integers(0, 2, 200))
    assert abs(noise["auc"] - 0.5) < 0.12
    # three classes: AUC is the mean over the one-vs-one pairs
    y3 = np.digitize(x[:, 0], [-0.5, 0.5])
    three = linear_probe(x[:400], y3[:400], x[400:], y3[400:], ["a", "b", "c"])
    assert three["auc"] > 0.97


def test_alignment_and_uniformity_formulas() -> None:
    # two groups of two unit vectors: pairs at 90 degrees (|d|² = 2) and 0 degrees (0)
    z = np.array([[1.0, 0.0], [0.0, 3.0], [0.0, 2.0], [0.0, 5.0]])
    group = np.array([7, 7, 3, 3])
    assert alignment(z, group) == pytest.approx(1.0)  # (2 + 0) / 2
    assert alignment(z, group, alpha=1.0) == pytest.approx(math.sqrt(2) / 2)
    # rows of one group only count with each other: a singleton adds nothing
    assert alignment(np.vstack([z, [[-1.0, 0.0]]]), np.r_[group, 9]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        alignment(z, np.arange(4))
    # uniformity by hand: pairs (a, b) of e1, e2, -e1: |d|² = 2, 4, 2
    u = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    want = math.log((2 * math.exp(-4.0) + math.exp(-8.0)) / 3)
    assert uniformity(u) == pytest.approx(want)
    # collapsed embeddings: every distance 0, uniformity 0 (its maximum)
    assert uniformity(np.ones((5, 3))) == pytest.approx(0.0)


def test_r2_of_exact_and_of_unrelated_targets() -> None:
    rng = np.random.default_rng(3)
    z = rng.normal(size=(300, 6))
    target = 3.0 * z[:, 1] - 2.0 * z[:, 4] + 7.0
    assert linear_r2(z[:200], target[:200], z[200:], target[200:]) == pytest.approx(1.0,
                                                                                     abs=1e-4)
    unrelated = rng.normal(size=300)
    assert linear_r2(z[:200], unrelated[:200], z[200:], unrelated[200:]) < 0.05
    # half the variance explained: R² ~ 0.5
    w = rng.normal(size=(4000, 6))
    half = w[:, 0] + rng.normal(size=4000)
    assert linear_r2(w[:2000], half[:2000], w[2000:], half[2000:]) == pytest.approx(0.5,
                                                                                 abs=0.05)
    # a constant embedding column does not break the fit
    z[:, 2] = 1.0
    assert linear_r2(z[:200], target[:200], z[200:], target[200:]) == pytest.approx(1.0,
                                                                                     abs=1e-4)

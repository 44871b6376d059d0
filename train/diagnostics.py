"""What a frozen representation knows: the probes of ``resim probe`` and of the training
monitor, as pure functions of embeddings (numpy arrays, one row per jet).

* :func:`knn_accuracy`: k-nearest-neighbour classification (cosine similarity, majority
  vote, ties to the nearer neighbours) of query jets against a labelled memory, as the
  online kNN of solo-learn and DINO; k = 5, 10, 20 by default.
* :func:`linear_probe`: a logistic regression on standardised embeddings (scikit-learn,
  L2, C = 1), fitted on one set, scored on another: accuracy and AUC (binary; with more
  classes the mean over one-vs-one pairs, as ``resim evaluate``).
* :func:`effective_rank`: exp of the entropy of the normalised eigenvalues of the
  embedding covariance (Roy & Vetterli's effective rank, as RankMe, Garrido et al., arXiv
  2210.02885, uses it on singular values): d for an isotropic cloud in d dimensions, 1
  when everything lies on a line. Dimensional collapse shows as a small value.
* :func:`alignment` and :func:`uniformity` (Wang & Isola, arXiv 2005.10242) on
  L2-normalised embeddings: the mean of ‖f(x) - f(y)‖^α over positive pairs (jets of one
  group; lower: views closer), and log E exp(-t ‖f(x) - f(y)‖²) over all pairs (lower:
  spread more evenly on the sphere; -4 is the limit of a uniform 2-sphere at t = 2).
* :func:`linear_r2`: the R² of a least-squares linear fit (with intercept) from the
  embedding to a jet quantity, fitted on one set and scored on another: what the
  representation encodes linearly. Used as shortcut detectors: jet |η| and pT carry almost
  no label information, so an embedding that predicts them well has learnt what the
  views of a group share trivially (their hard process), not the jet.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

KS = (5, 10, 20)


def _normalised(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


def knn_accuracy(memory: np.ndarray, memory_labels: np.ndarray, queries: np.ndarray,
                 query_labels: np.ndarray, ks: Sequence[int] = KS,
                 exclude: np.ndarray | None = None) -> dict[int, float]:
    """Accuracy of a k-NN vote (cosine similarity) for each k in ``ks``.

    Each query takes the labels of its k most similar memory rows; the most frequent label
    wins, ties going to the label whose members are more similar in sum. ``exclude``
    (queries × memory, bool) removes pairs from the vote (e.g. a jet and its own group
    when the memory is the query set itself).
    """
    memory_labels = np.asarray(memory_labels)
    query_labels = np.asarray(query_labels)
    if len(memory) == 0 or len(queries) == 0:
        raise ValueError("knn_accuracy needs a non-empty memory and query set")
    classes, coded = np.unique(memory_labels, return_inverse=True)
    m, q = _normalised(memory), _normalised(queries)
    k_max = min(max(ks), len(m))
    nearest = np.empty((len(q), k_max), np.int64)
    similar = np.empty((len(q), k_max))
    for start in range(0, len(q), 1024):  # bounded memory: 1024 x N similarities at a time
        s = q[start:start + 1024] @ m.T
        if exclude is not None:
            s = np.where(exclude[start:start + 1024], -np.inf, s)
        top = np.argpartition(-s, k_max - 1, axis=1)[:, :k_max]
        order = np.argsort(-np.take_along_axis(s, top, 1), axis=1, kind="stable")
        nearest[start:start + 1024] = np.take_along_axis(top, order, 1)
        similar[start:start + 1024] = np.take_along_axis(s, nearest[start:start + 1024], 1)
    out = {}
    for k in ks:
        kk = min(k, k_max)
        votes = np.zeros((len(q), len(classes)))
        weight = np.zeros((len(q), len(classes)))
        rows = np.repeat(np.arange(len(q)), kk)
        cols = coded[nearest[:, :kk]].ravel()
        usable = np.isfinite(similar[:, :kk]).ravel()
        np.add.at(votes, (rows[usable], cols[usable]), 1.0)
        np.add.at(weight, (rows[usable], cols[usable]), similar[:, :kk].ravel()[usable])
        # most votes; among equal counts the larger summed similarity (weights < k)
        winner = np.argmax(votes * (2 * kk + 2) + weight, axis=1)
        out[int(k)] = float(np.mean(classes[winner] == query_labels))
    return out


def linear_probe(train: np.ndarray, train_labels: np.ndarray, test: np.ndarray,
                 test_labels: np.ndarray, class_names: Sequence[str] | None = None,
                 max_iter: int = 2000) -> dict[str, float]:
    """Logistic regression on standardised embeddings: test ``accuracy`` and ``auc``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from .metrics import classification_metrics

    train_labels, test_labels = np.asarray(train_labels), np.asarray(test_labels)
    classes = np.unique(np.concatenate([train_labels, test_labels]))
    if len(np.unique(train_labels)) < 2:
        raise ValueError("linear_probe needs at least two classes in the training set")
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=max_iter))
    model.fit(np.asarray(train, np.float64), train_labels)
    probs = np.zeros((len(test), int(classes.max()) + 1))
    probs[:, model.classes_] = model.predict_proba(np.asarray(test, np.float64))
    names = list(class_names) if class_names is not None else \
        [str(c) for c in range(probs.shape[1])]
    m = classification_metrics(probs, test_labels, names[:probs.shape[1]])
    return {"accuracy": float(m["accuracy"]), "auc": float(m["auc"])}


def effective_rank(z: np.ndarray) -> float:
    """exp(entropy) of the normalised eigenvalues of the covariance of ``z`` (N, D)."""
    z = np.asarray(z, dtype=np.float64)
    if len(z) < 2:
        raise ValueError("effective_rank needs at least two rows")
    eigenvalues = np.clip(np.linalg.eigvalsh(np.cov(z, rowvar=False).reshape(
        z.shape[1], z.shape[1])), 0.0, None)
    total = eigenvalues.sum()
    if total <= 0:
        return 0.0
    p = eigenvalues[eigenvalues > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


def alignment(z: np.ndarray, group: np.ndarray, alpha: float = 2.0) -> float:
    """Mean ‖f(x) - f(y)‖^alpha over positive pairs (rows of one group, i < j), on
    L2-normalised rows. Raises if no group has two rows."""
    z, group = _normalised(z), np.asarray(group)
    order = np.argsort(group, kind="stable")
    z, group = z[order], group[order]
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    sizes = np.diff(np.r_[starts, len(group)])
    total, pairs = 0.0, 0
    for size in np.unique(sizes[sizes > 1]):  # groups of equal size together: vectorised
        rows = starts[sizes == size][:, None] + np.arange(size)
        block = z[rows]  # (G, size, D)
        i, j = np.triu_indices(size, 1)
        distance = np.linalg.norm(block[:, i] - block[:, j], axis=-1)
        total += float((distance ** alpha).sum())
        pairs += distance.size
    if pairs == 0:
        raise ValueError("alignment needs a group with at least two rows")
    return total / pairs


def uniformity(z: np.ndarray, t: float = 2.0, max_rows: int = 4096,
               seed: int = 0) -> float:
    """log of the mean of exp(-t ‖f(x) - f(y)‖²) over all pairs i < j of L2-normalised
    rows (a fixed random subset of ``max_rows`` rows if there are more)."""
    z = _normalised(z)
    if len(z) < 2:
        raise ValueError("uniformity needs at least two rows")
    if len(z) > max_rows:
        z = z[np.random.default_rng(seed).choice(len(z), max_rows, replace=False)]
    squared = np.clip(2.0 - 2.0 * (z @ z.T), 0.0, None)  # unit vectors: |a-b|² = 2 - 2 a·b
    i, j = np.triu_indices(len(z), 1)
    values = -t * squared[i, j]
    top = values.max()
    return float(top + np.log(np.mean(np.exp(values - top))))


def linear_r2(train: np.ndarray, train_target: np.ndarray, test: np.ndarray,
              test_target: np.ndarray, ridge: float = 1e-3) -> float:
    """R² on (test, test_target) of the least-squares fit target ≈ a + b·z on the training
    rows. A small ridge term (``ridge`` × rows on the standardised features: it shrinks
    only directions holding less than ~``ridge`` of a feature's variance) keeps degenerate
    embeddings solvable and small training sets from fitting noise. 1: the target is a
    linear function of the embedding; 0: no better than its mean; negative: worse."""
    x = np.asarray(train, np.float64)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)

    def design(a: np.ndarray) -> np.ndarray:
        a = (np.asarray(a, np.float64) - mean) / scale
        return np.hstack([np.ones((len(a), 1)), a])

    a = design(x)
    y = np.asarray(train_target, np.float64)
    penalty = ridge * len(a) * np.eye(a.shape[1])
    penalty[0, 0] = 0.0  # no penalty on the intercept
    coef = np.linalg.solve(a.T @ a + penalty, a.T @ y)
    truth = np.asarray(test_target, np.float64)
    residual = ((design(test) @ coef - truth) ** 2).sum()
    spread = ((truth - truth.mean()) ** 2).sum()
    return float(1.0 - residual / spread) if spread > 0 else float("nan")


__all__ = ["KS", "alignment", "effective_rank", "knn_accuracy", "linear_probe", "linear_r2",
           "uniformity"]

"""The detector's binned parametrizations and cell rings, looked up in O(1) per particle.

:mod:`resim.detector_spec` defines the tables (:class:`~resim.detector_spec.BinnedTable`,
:class:`~resim.detector_spec.TrackResolution`) and evaluates them with
``np.searchsorted``: a binary search per particle, which for the 34 pT bins of the
impact-parameter resolutions costs more than all the arithmetic around it. Here the same
values come from a uniform fine grid over the edges (its cells at most half as wide as
the narrowest bin), which names each value's bin or a neighbour, corrected by comparing
with that bin's two edges: the same bins as the binary search, exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from resim.detector_spec import BinnedTable, TrackResolution


class Bins:
    """Bins between sorted ``edges``: :meth:`rank` is
    ``np.searchsorted(edges, x, side="right")``, the number of edges at or below x (0
    below the first edge: bin ``rank - 1``). Float32 ``x`` is compared with the edges
    rounded to float32 (comparing across precisions costs numpy three times as much)."""

    #: Up to this many edges, counting the edges passed costs fewer passes than the grid.
    FEW = 4
    #: Most fine cells a grid may have (8 MB a table): bins much narrower than their range
    #: (a card's choice) are searched instead, with the same result.
    MAX_CELLS = 1 << 20

    def __init__(self, edges: Sequence[float] | np.ndarray):
        e = np.asarray(edges, float)
        self.edges = e
        self._grid = False
        # edges, and below and above of the grid's cells: float64 and float32
        self._at: dict[np.dtype, tuple[np.ndarray, ...]] = {
            np.dtype(np.float64): (e,), np.dtype(np.float32): (e.astype(np.float32),)}
        if len(e) <= self.FEW:
            return
        widths = np.diff(e)
        step = 0.5 * widths.min() if widths.min() > 0 else 1.0
        n = int(np.ceil((e[-1] - e[0]) / step)) + 1
        if n > self.MAX_CELLS:
            return
        self._grid = True
        self._last = n
        self._scale, self._offset = 1.0 / step, e[0] / step
        # Per fine cell: the rank of its lower edge, and the edges around that rank r,
        # [below, above), padded with ±inf: three lookups by the same index.
        self._guess = np.searchsorted(e, e[0] + step * np.arange(n + 1), side="right")
        for dtype, (edges, *_) in self._at.items():
            self._at[dtype] = (edges, np.concatenate([[-np.inf], edges]).take(self._guess),
                               np.concatenate([edges, [np.inf]]).take(self._guess))

    def rank(self, x: np.ndarray) -> np.ndarray:
        """The number of edges at or below each ``x`` (int64)."""
        x = np.asarray(x)
        if x.dtype != np.float32:
            x = x.astype(float, copy=False)
        at = self._at[x.dtype]
        edges = at[0]
        if not np.isfinite(x).all():  # NaN has no cell in the grid, nor a count: search
            return np.searchsorted(edges, x, side="right")
        if len(edges) <= self.FEW:
            rank = (x >= edges[0]).astype(np.int64)
            for edge in edges[1:]:
                rank += x >= edge
            return rank
        if not self._grid:
            return np.searchsorted(edges, x, side="right")
        below, above = at[1:]
        # Any fine cell within one of x's names x's bin or a neighbour (a cell is at most
        # half a bin wide): one comparison on each side corrects the guess.
        fine = x * self._scale
        fine -= self._offset
        np.maximum(fine, 0, out=fine)  # np.clip, without its overhead
        np.minimum(fine, self._last, out=fine)
        cell = fine.astype(np.intp)
        rank = (x >= above.take(cell)).astype(np.int64)
        rank += self._guess.take(cell)
        rank -= x < below.take(cell)
        return rank

    def index(self, x: np.ndarray) -> np.ndarray:
        """The bin of each ``x``: ``np.searchsorted(edges, x, side="right") - 1``."""
        return self.rank(x) - 1


class TableLookup:
    """A :class:`~resim.detector_spec.BinnedTable`'s values, as its ``__call__`` gives them
    (0 outside its |η| edges and below its first pT edge), as ``dtype``."""

    def __init__(self, table: BinnedTable, dtype: type = np.float64):
        self.eta = Bins(table.eta_edges)
        self.pt = Bins(table.pt_edges)
        values = np.asarray(table.values, float)
        # Rows of zeros below and above the |η| bins, a column of zeros below the pT bins:
        # every (row + 1, column + 1) then names its value, outside ones included.
        padded = np.zeros((values.shape[0] + 2, values.shape[1] + 1), dtype)
        padded[1:-1, 1:] = values
        self._flat = padded.ravel()
        self._columns = padded.shape[1]

    def index(self, pt: np.ndarray, abs_eta: np.ndarray) -> np.ndarray:
        """Each particle's entry: :meth:`at` gives its value (here, or in a table with the
        same edges)."""
        index = self.eta.rank(abs_eta)
        index *= self._columns
        index += self.pt.rank(pt)
        return index

    def at(self, index: np.ndarray) -> np.ndarray:
        return self._flat.take(index)

    def same_bins(self, other: TableLookup) -> bool:
        """Whether ``other`` has the same edges (so the same :meth:`index`)."""
        return (np.array_equal(self.eta.edges, other.eta.edges)
                and np.array_equal(self.pt.edges, other.pt.edges))

    def __call__(self, pt: np.ndarray, abs_eta: np.ndarray) -> np.ndarray:
        return self.at(self.index(pt, abs_eta))


class Resolution:
    """A :class:`~resim.detector_spec.TrackResolution`: sqrt(constant² + (slope·pT)²) per
    |η| bin, 0 outside, as ``dtype``."""

    def __init__(self, resolution: TrackResolution, dtype: type = np.float64):
        self.eta = Bins(resolution.eta_edges)
        self._constant: np.ndarray = np.concatenate([[0.0], resolution.constant, [0.0]]
                                                    ).astype(dtype)
        self._slope: np.ndarray = np.concatenate([[0.0], resolution.slope, [0.0]]).astype(dtype)

    def __call__(self, pt: np.ndarray, abs_eta: np.ndarray) -> np.ndarray:
        row = self.eta.rank(abs_eta)
        a, b = self._constant.take(row), self._slope.take(row) * pt
        return np.sqrt(a * a + b * b)


__all__ = ["Bins", "Resolution", "TableLookup"]

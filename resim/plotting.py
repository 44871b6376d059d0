"""Figures for people to look at: mplhep's ROOT style, saved straight to a PNG.

No pyplot: nothing global (backend, current figure, style) changes for the caller, so
plotting from a library call or a training job never disturbs a user's own session.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def figure(path: str | Path, figsize: tuple[float, float], nrows: int = 1, ncols: int = 1,
           dpi: int = 100, **subplots: Any) -> Iterator[tuple[Any, Any]]:
    """``(fig, axes)`` with ``axes`` a 2-D array of subplots; saved to ``path`` on exit."""
    import matplotlib.style
    import mplhep
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with matplotlib.style.context(mplhep.style.ROOT):
        fig = Figure(figsize=figsize)
        FigureCanvasAgg(fig)
        axes = fig.subplots(nrows, ncols, squeeze=False, **subplots)
        yield fig, axes
        fig.tight_layout()
        fig.savefig(path, dpi=dpi)

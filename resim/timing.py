"""Seconds spent in each step of the work, for the run summary and the benchmarks."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class StepTimer:
    """Adds the time spent inside ``with timer.step(name):`` to ``seconds[name]``.

    A step timed inside another counts for itself only: reading Pythia's events happens
    inside the re-simulation (a callback per batch), the pileup overlay inside the
    detector step; the outer step's time leaves the inner ones out, so the steps add up
    to the time spent.
    """

    def __init__(self, seconds: dict[str, float]):
        #: Seconds per step; steps not in it yet are added at their first use.
        self.seconds = seconds
        #: Of each step under way (innermost last): the time its inner steps took.
        self._inner: list[float] = []

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        self._inner.append(0.0)
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.seconds[name] = self.seconds.get(name, 0.0) + elapsed - self._inner.pop()
            if self._inner:
                self._inner[-1] += elapsed


__all__ = ["StepTimer"]

"""Progress of long work: a live bar on a terminal, a line every half minute in batch logs."""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from click._termui_impl import ProgressBar


def _duration(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


class Progress:
    """Hard events done of ``total``, realizations per second, jets, failures and ETA."""

    def __init__(self, total: int, label: str = "generating", enabled: bool = True,
                 every: float = 30.0, stream=None):
        self.total, self.label, self.enabled, self.every = total, label, enabled, every
        self.stream = stream or sys.stderr
        self.done = self.realizations = self.jets = self.failed = 0
        self._start = self._last_line = time.monotonic()
        self._start_done = 0
        self._bar: ProgressBar[int] | None = None
        if enabled and self.stream.isatty():
            # The bar's text is ours: click would show its ETA only after a second and count
            # events of a resumed run as if made at this run's speed.
            self._bar = click.progressbar(length=total, label=label, show_eta=False,
                                          show_pos=False, show_percent=False,
                                          file=self.stream,
                                          item_show_func=lambda _: self._status())
            self._bar.__enter__()

    def resume_from(self, done: int) -> None:
        """Count events already made by an earlier, interrupted run (not in the rate)."""
        self.done = self._start_done = done
        if self._bar is not None:
            self._bar.update(done)

    def _rate(self) -> float:
        return self.realizations / max(time.monotonic() - self._start, 1e-9)

    def _eta(self) -> float | None:
        """Seconds left at this run's pace (events made before a resume not counted)."""
        new = self.done - self._start_done
        return (time.monotonic() - self._start) / new * (self.total - self.done) if new else None

    #: What ``done`` and ``total`` count.
    unit = "events"

    def _details(self) -> str:
        """What the status says after the position."""
        eta = self._eta()
        return (f"{self._rate():.0f} realizations/s, {self.jets} jets, {self.failed} failed, "
                f"ETA {'?' if eta is None else _duration(eta)}")

    def _status(self) -> str:
        return f"{self.done}/{self.total} {self.unit}, {self._details()}"

    def update(self, events: int, realizations: int, jets: int, failed: int) -> None:
        self.done += events
        self.realizations += realizations
        self.jets += jets
        self.failed += failed
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(events, current_item=True)
            return
        now = time.monotonic()
        if now - self._last_line >= self.every or self.done >= self.total:
            self._last_line = now
            click.echo(f"{self.label}: {self._line()}", file=self.stream)

    def _line(self) -> str:
        """The status as a log line (no terminal): what the bar would show, in words."""
        return (f"{self.done}/{self.total} {self.unit} "
                f"({100 * self.done / max(self.total, 1):.0f}%), {self._details()}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None

    @property
    def seconds(self) -> float:
        return time.monotonic() - self._start


class JetProgress(Progress):
    """Progress counted in jets, for work on finished data sets (``resim convert``, ``resim
    export``): ``update(jets, jets, jets, 0)``."""

    unit = "jets"

    def _details(self) -> str:
        return f"{self._rate():.0f} jets/s"

    def _status(self) -> str:
        return self._details()

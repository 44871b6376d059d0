"""Stopping a run on a signal, keeping what is finished.

A batch system sends SIGTERM before it kills a job (Slurm at the time limit, on
preemption or ``scancel``, then SIGKILL after ``KillWait``, 30 s by default), some send a
warning first (``sbatch --signal=USR1@120``), and a user presses Ctrl-C (SIGINT).
While :class:`StopSignals` is active, these signals do not end the process: they are
recorded, and the run stops at its next safe point — it drops the block in progress
(between two of Pythia's batches, so within about a second), commits the blocks it has
finished and raises :class:`StoppedBySignalError`, whose message says how many hard
events are saved and that ``--resume`` continues. Under MPI the other ranks stop the same
way (``resim.parallel.stop_all``). A second signal of the same kind ends the process at
once, as the signal would have: that loses at most the commit in progress, which
``--resume`` cuts back like after a kill.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

from .errors import ResimError
from .store import segments

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class StoppedBySignalError(ResimError):
    """The run stopped on a signal after committing what it had finished. Exit code
    128 + the signal's number, as a shell reports a process the signal ended."""

    def __init__(self, signum: int, parts: Path, events: int):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.parts, self.events = signum, parts, events
        self.exit_code = 128 + signum

    def saved(self) -> int:
        """Hard events committed so far, by every rank (read from the journals)."""
        return sum(s.done - s.first for s in segments(self.parts))

    def __str__(self) -> str:
        if not self.parts.is_dir():
            return (f"stopped by {signal.Signals(self.signum).name} while Pythia was set up: "
                    "nothing was written")
        saved = self.saved()
        then = ("the data set is written" if saved == self.events else
                "the run continues")
        return (f"stopped by {signal.Signals(self.signum).name}: {saved} of {self.events} "
                f"hard events are saved in {self.parts}/; rerun with --resume and {then}")


class StopSignals:
    """While active (``with StopSignals() as signals``), SIGTERM, SIGINT and SIGUSR1 set
    ``received`` to the signal's number instead of ending the process (only in the main
    thread, where Python handles signals)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for s in STOP_SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received == signum:  # asked twice: as the signal would have, at once
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        self.received = signum


__all__ = ["STOP_SIGNALS", "StopSignals", "StoppedBySignalError"]

"""The main job, ``resim generate --card CARD``: card → hard events → realizations →
jets → segments → one data set.

Hard events are processed in blocks (what happens to one block is
:mod:`resim.pipeline`); this module runs them: it prepares the output (or resumes it),
gives each rank its share, sizes the blocks, commits their rows to the rank's segment
file (see :mod:`resim.store`) and reports progress. Under
``mpiexec`` each rank takes a contiguous share of the hard events; rank 0 shows one
progress bar for all and, at the end, writes the data set over every rank's segments.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import awkward as ak
import fastjet
import h5py
import numpy as np

from . import __version__
from .card import Card
from .generators.pileup import LIBRARY_FILE, shared_library
from .generators.pythia_setup import pythia_version, stdout_to
from .layout import concatenate_tables
from .output import (
    COMPLETE,
    RESUME,
    LaunchError,
    OutputError,
    checked_output,
    fingerprint,
    on_rank0,
    prepare_output,
)
from .parallel import (
    AnotherRankFailedError,
    Comm,
    SerialComm,
    split_ranges,
    stop_requested,
    wait_for_all,
)
from .pipeline import BlockStats, InterruptedBlockError, Pipeline
from .progress import Progress
from .signals import StoppedBySignalError, StopSignals
from .store import (
    SEGMENT_BYTES,
    WORTH_COMPACTING,
    Segment,
    SegmentWriter,
    WriteError,
    build_dataset,
    compact,
    dead_space,
    discard,
    discard_unfinished,
    missing_ranges,
    parts_dir,
    segments,
    validate,
)

log = logging.getLogger(__name__)

#: Blocks are sized, when the card does not fix them, to take about this long: long
#: enough to spread what each block pays once (awkward wraps every ``nextBatch`` call's
#: buffers for ~2-3 ms; FastJet and numpy have their own costs per call), short enough
#: for a lively progress bar and a prompt stop when another rank fails. A block that
#: would end after the next commit is due is made shorter.
BLOCK_SECONDS = 5.0
#: Realizations of the first block, before anything is measured: small, so the first
#: commit comes on time even with Vincia (~0.2 s a realization), and the most of any
#: block: a block's visible particles stay in memory until it is clustered (~20 kB per
#: realization).
FIRST_BLOCK_REALIZATIONS = 32
MAX_BLOCK_REALIZATIONS = 2048
#: Commits are aimed at this fraction of ``commit_seconds`` after the last, and blocks
#: sized to end this fraction of the time left before then: on a busy machine a block can
#: take 20-30 % longer than the rate measured so far says.
_MARGIN = 0.8

_PROGRESS_TAG, _DONE_TAG = 71, 72


@dataclass
class RunSummary:
    output: Path
    events: int
    groups: int
    jets: int
    failed: int
    lost: int
    hard_failed: int
    seconds: float
    bytes: int
    variations: dict[str, int] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    #: Of ``seconds``: setting up (and checking) the Pythia instances.
    setup_seconds: float = 0.0
    #: The CPU time of that set-up (benchmarks subtract it from the process's CPU time).
    setup_cpu_seconds: float = 0.0
    #: This rank's time per step (hard process, re-simulation, final state, jets, writing).
    timings: dict[str, float] = field(default_factory=dict)

    def line(self) -> str:
        per = ", ".join(f"{k} {v}" for k, v in self.variations.items())
        return (f"resim: {self.groups} groups, {self.jets} jets ({per}) from {self.events} "
                f"hard events; {self.failed} failed attempts, {self.lost} realizations lost, "
                f"{self.hard_failed} hard events failed; {self.seconds:.1f} s "
                f"({self.setup_seconds:.1f} s set-up); {self.bytes / 1e6:.1f} MB -> {self.output}")


class BlockSizes:
    """Hard events per block: the card's ``batch_events`` if it sets it, else as many as
    take about ``BLOCK_SECONDS`` at the rate measured so far. Output does not depend on
    how hard events are split into blocks (every realization has its own seed)."""

    def __init__(self, card: Card):
        self.fixed = card.run.batch_events
        self.per_event = card.realizations_per_event
        self.events, self.seconds = 0, 0.0

    def record(self, events: int, seconds: float) -> None:
        """A block of ``events`` hard events took ``seconds``."""
        self.events += events
        self.seconds += seconds

    def next(self, seconds: float = BLOCK_SECONDS) -> int:
        """Hard events for the next block, to take about ``seconds`` (at most
        ``BLOCK_SECONDS``); at least one."""
        if self.fixed:
            return self.fixed
        most = MAX_BLOCK_REALIZATIONS / self.per_event
        wanted = FIRST_BLOCK_REALIZATIONS / self.per_event
        if self.seconds > 0:
            wanted = self.events / self.seconds * min(seconds, BLOCK_SECONDS)
        return max(1, round(min(wanted, most)))

    def seconds_of(self, events: int) -> float:
        """How long ``events`` hard events take at the rate measured so far (0: unknown)."""
        return events * self.seconds / self.events if self.events else 0.0


# ------------------------------------------------------------------------- the output


def _plan(comm: Comm, parts: Path, n_events: int
          ) -> tuple[list[Segment], list[list[tuple[int, int]]], list[str]]:
    """Validate what earlier runs committed (shared among ranks) and split what is left.
    Also returns, for rank 0 to print, what became of each damaged segment."""
    rank, size = comm.Get_rank(), comm.Get_size()
    if rank == 0:
        discard_unfinished(parts)
    found = comm.bcast(segments(parts) if rank == 0 else None)
    committed = [s.done for s in found]
    # validate() may cut a damaged segment back to its last intact commit: the segment
    # as its validating rank left it is what everyone keeps.
    mine = {i: s if validate(s) else None for i, s in enumerate(found) if i % size == rank}
    # What an interrupted run left was never checked for dead space (a run does so when
    # it finishes a segment), and rows validate() dropped leave their chunks behind;
    # _compact copies a segment only when that is worth it.
    for s in mine.values():
        if s is not None:
            _compact(s)
    verdict: dict[int, Segment | None] = {}
    for part in comm.allgather(mine):
        verdict.update(part)
    kept = [v for i in range(len(found)) if (v := verdict[i]) is not None]
    repairs = []
    for i, s in enumerate(found):
        v = verdict[i]
        if v is None:
            if rank == 0:
                discard(s)
            if committed[i] > s.first:
                repairs.append(f"{s.path.name} is unreadable: discarded, hard events "
                               f"{s.first}-{committed[i] - 1} are made again")
        elif v.done < committed[i]:
            repairs.append(f"{s.path.name} was damaged (killed while writing): cut back to "
                           f"its last intact commit, hard events {v.done}-{committed[i] - 1} "
                           "are made again")
    comm.barrier()
    return kept, split_ranges(missing_ranges(kept, n_events), size), repairs


def _tally(card: Card, segs: list[Segment]) -> dict[str, Any]:
    """Counts over some segments (each rank tallies its own; rank 0 adds them up)."""
    var = np.zeros(len(card.variations), np.int64)
    lab = np.zeros(len(card.labels), np.int64)
    tally = dict.fromkeys(("n_failed", "n_lost", "n_hard_failed"), 0)
    for s in segs:
        with h5py.File(s.path, "r") as f:
            var += np.bincount(f["jets/variation"][:s.rows["jets"]], minlength=len(var))
            lab += np.bincount(f["groups/label"][:s.rows["groups"]], minlength=len(lab))
            for k in ("n_failed", "n_lost"):
                tally[k] += int(f["events"][k][:s.rows["events"]].sum())
            tally["n_hard_failed"] += int((~f["events/hard_ok"][:s.rows["events"]]).sum())
    return {**tally, "n_groups": sum(s.rows["groups"] for s in segs),
            "n_jets": sum(s.rows["jets"] for s in segs), "variations": var, "labels": lab}


def _counts(card: Card, tallies: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's numbers (the data set's attributes and summary) from every rank's tally."""
    total = {k: sum(t[k] for t in tallies) for k in tallies[0]}
    return {
        "n_events": card.run.events,
        **{k: int(v) for k, v in total.items() if k.startswith("n_")},
        "variations": dict(zip(card.variation_names, total["variations"].tolist(),
                               strict=True)),
        "labels": dict(zip(card.labels, total["labels"].tolist(), strict=True)),
    }


def _attrs(card: Card, counts: dict[str, Any], ranks: list[dict[str, Any]],
           run_id: str | None) -> dict[str, Any]:
    summary = {**card.summary(), **counts}
    return {
        **({"run_id": run_id} if run_id else {}),
        "card": card.text, "card_path": str(card.path), "summary": json.dumps(summary),
        "variations": list(card.variation_names), "labels": list(card.labels),
        "seed": card.run.seed, "n_ranks": len(ranks), "rank_timings": json.dumps(ranks),
        **{k: v for k, v in counts.items() if k.startswith("n_")},
        "resim_version": __version__, "pythia_version": pythia_version(),
        "fastjet_version": fastjet.__version__, "awkward_version": ak.__version__,
        "h5py_version": h5py.__version__, "hdf5_version": h5py.version.hdf5_version,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
    }


# ---------------------------------------------------------------------------- the run


def generate(card: Card, *, resume: bool = False, overwrite: bool = False,
             comm: Comm | None = None, progress: bool = True) -> RunSummary:
    """Run the card. Raises CardError (bad card), OutputError or LaunchError before any
    output is made."""
    comm = comm or SerialComm()
    state = checked_output(card, resume, overwrite, comm)  # before the long set-up
    with StopSignals() as signals:
        return _generate(card, state, overwrite, comm, progress, signals)


def _generate(card: Card, state: str, overwrite: bool, comm: Comm, progress: bool,
              signals: StopSignals) -> RunSummary:
    rank, size = comm.Get_rank(), comm.Get_size()
    stops = _Stops(comm, signals, card)
    start = time.monotonic()
    pipeline = Pipeline(card)  # checks every setting with Pythia before anything is written
    setup = time.monotonic() - start
    _stop_if_signalled(comm, signals, stops)  # during the set-up: before anything is written

    output, parts = card.run.output, parts_dir(card.run.output)
    run_id = on_rank0(comm, lambda: prepare_output(card, state, overwrite))

    if state != COMPLETE:
        if pipeline.minimum_bias is not None:
            seconds, cpu = time.monotonic(), time.process_time()
            _load_pileup_library(pipeline, parts, comm, progress, signals)
            _stop_if_signalled(comm, signals, stops)  # a library cut short: nothing lost
            setup += time.monotonic() - seconds
            pipeline.setup_cpu_seconds += time.process_time() - cpu
        kept, shares, repairs = _plan(comm, parts, card.run.events)
        kept_events = sum(s.done - s.first for s in kept)
        if rank == 0 and state == RESUME:
            log.info("resuming %s: %s of %s hard events kept from the interrupted run",
                     output, kept_events, card.run.events)
            for line in repairs:
                log.info("  %s", line)
        bar = Progress(card.run.events, enabled=progress and rank == 0)
        bar.resume_from(kept_events)
        began, began_cpu = time.monotonic(), time.process_time()
        try:
            with stdout_to(parts / f"pythia-rank{rank}.log"):
                made, realizations = _run_share(pipeline, shares[rank], parts, run_id, comm,
                                                bar, stops)
        finally:
            bar.close()
        timing = {"rank": rank, "setup_seconds": round(setup, 3),
                  "work_seconds": round(time.monotonic() - began, 3),
                  "cpu_seconds": round(time.process_time() - began_cpu, 3),
                  "events": sum(b - a for a, b in shares[rank]),
                  "realizations": realizations}
        # No rank reads another's files: each tallies what it made (and its share of what
        # earlier runs kept), rank 0 gets the journals and tallies by message and writes
        # only the virtual data set's metadata.
        mine = made + kept[rank::size]
        tally = _tally(card, mine)
        # Ranks done early wait for the others; a signal there stops them all (after
        # this, writing the data set takes seconds: a signal then lets it finish).
        wait_for_all(comm, stop=stops)
        reports = comm.gather((mine, tally, timing))
        if rank == 0:
            assert reports is not None  # gather's root has everyone's
            segs = [s for m, _, _ in reports for s in m]
            attrs = _attrs(card, _counts(card, [c for _, c, _ in reports]),
                           [r for _, _, r in reports], run_id)
            try:
                build_dataset(output, segs, card.run.events, attrs)
            except OSError as err:
                raise WriteError(f"cannot write the data set {output}: "
                                 f"{err.strerror or err}") from None
    wait_for_all(comm)
    summary = None
    if rank == 0:
        with h5py.File(output, "r") as f:
            s = json.loads(f.attrs["summary"])
        summary = RunSummary(
            output=output, events=s["n_events"], groups=s["n_groups"], jets=s["n_jets"],
            failed=s["n_failed"], lost=s["n_lost"], hard_failed=s["n_hard_failed"],
            seconds=time.monotonic() - start, setup_seconds=setup,
            setup_cpu_seconds=pipeline.setup_cpu_seconds,
            bytes=sum(p.stat().st_size for p in [output, *parts.glob("events-*.h5")]),
            variations=s["variations"], labels=s["labels"], timings=pipeline.timings)
    return comm.bcast(summary)


def _stop_if_signalled(comm: Comm, signals: StopSignals, stops: _Stops) -> None:
    """Stop every rank if any received a signal (between steps that write nothing)."""
    received = [s for s in comm.allgather(signals.received) if s is not None]
    if received:
        signals.received = received[0]
        stops.stop()


def _load_pileup_library(pipeline: Pipeline, parts: Path, comm: Comm, say: bool,
                         signals: StopSignals) -> None:
    """The run's minimum-bias library: the one an earlier run of this card kept in
    ``parts``, or made now (ranks sharing the work, stopping at a signal) and kept there.
    Its Pythia writes to a log of its own: ``pythia-rank<r>.log`` is the generation's."""
    path = parts / LIBRARY_FILE
    rank = comm.Get_rank()
    assert pipeline.card.pileup is not None and pipeline.minimum_bias is not None
    if say and rank == 0 and not path.is_file():
        log.info("making the pileup library: %s minimum-bias events (~2 ms each, shared "
                 "by %s rank(s))", pipeline.card.pileup.library.events, comm.Get_size())
    with stdout_to(parts / f"pileup-library-rank{rank}.log"):
        library = shared_library(pipeline.minimum_bias, path, comm,
                                 stop=lambda: signals.received is not None)
    if library is not None:
        pipeline.pileup_library = library


def _run_share(pipeline: Pipeline, share: list[tuple[int, int]], parts: Path,
               run_id: str | None, comm: Comm, bar: Progress,
               stops: _Stops) -> tuple[list[Segment], int]:
    """Make this rank's hard events, committing finished blocks together so that a commit
    comes at most ``commit_seconds`` after the one before (or the start); report progress
    to rank 0. A stop (a signal, another rank's failure) drops the block in progress,
    commits the finished ones and raises. Returns the segments written and the number of
    realizations made."""
    made: list[Segment] = []
    realizations = 0
    run = pipeline.card.run
    sizes = BlockSizes(pipeline.card)
    reports = _ProgressReports(comm, bar, stops)
    pipeline.interrupt = stops.requested
    # Blocks are not cut shorter than this to fit before a commit: it is made first.
    shortest = min(BLOCK_SECONDS, run.commit_seconds) / 4
    for a, b in share:
        writer = SegmentWriter(parts, a, run_id)
        made.append(writer.segment)
        buffered: list[dict[str, dict[str, np.ndarray]]] = []
        due = time.monotonic() + _MARGIN * run.commit_seconds
        first = a
        try:
            while first < b:
                if stops.requested():
                    _commit(pipeline, writer, buffered, first)
                    stops.stop()
                # A block that would end after the commit is due is made shorter, or the
                # commit made first.
                left = due - time.monotonic()
                events = sizes.next(_MARGIN * left)
                if buffered and (left < shortest or sizes.seconds_of(events) > left):
                    _commit(pipeline, writer, buffered, first)
                    buffered, due = [], time.monotonic() + _MARGIN * run.commit_seconds
                    if writer.nbytes > SEGMENT_BYTES:
                        _finish(pipeline, writer)
                        writer = SegmentWriter(parts, first, run_id)
                        made.append(writer.segment)
                    events = sizes.next(_MARGIN * (due - time.monotonic()))
                last = min(first + events, b)
                started = time.monotonic()
                try:
                    tables, stats = pipeline.block(first, last)
                except InterruptedBlockError:
                    continue  # dropped; the loop's first check commits and stops
                sizes.record(last - first, time.monotonic() - started)
                buffered.append(tables)
                realizations += stats.realizations
                reports.send(stats)
                first = last
            _commit(pipeline, writer, buffered, b)
            _finish(pipeline, writer)
        finally:
            # Committed rows are on disk already; on an error (a full disk) the close
            # may fail too, and must not hide that first error.
            with contextlib.suppress(OSError):
                writer.close()
    reports.finish()
    return made, realizations


def _finish(pipeline: Pipeline, writer: SegmentWriter) -> None:
    """Close a segment that is complete, compacting it if that is worth it."""
    with pipeline.timer.step("writing"):
        writer.close()
        _compact(writer.segment)


class _Stops:
    """Whether this rank must stop (a signal it received, another rank's request), and
    stopping: :class:`StoppedBySignalError` for its own signal, else
    ``AnotherRankFailedError``."""

    def __init__(self, comm: Comm, signals: StopSignals, card: Card):
        self.comm, self.signals, self.card = comm, signals, card

    def requested(self) -> bool:
        return self.signals.received is not None or stop_requested(self.comm)

    def stop(self) -> NoReturn:
        if self.signals.received is not None:
            raise StoppedBySignalError(self.signals.received, parts_dir(self.card.run.output),
                                       self.card.run.events)
        raise AnotherRankFailedError


def _commit(pipeline: Pipeline, writer: SegmentWriter,
            buffered: list[dict[str, dict[str, np.ndarray]]], done: int) -> None:
    """Write the finished blocks up to hard event ``done`` (if any) and record them."""
    if not buffered:
        return
    with pipeline.timer.step("writing"):
        try:
            writer.commit(concatenate_tables(buffered), done=done)
        except OSError as err:
            seg = writer.segment
            raise WriteError(f"cannot write hard events {seg.done}-{done - 1} to "
                             f"{seg.path}: {err.strerror or err}") from None


def _compact(seg: Segment) -> None:
    """Rewrite a finished segment without the space it does not use, if that is worth a
    copy. Not being able to (the copy needs as much free space again) costs only that
    space."""
    if dead_space(seg.path) <= WORTH_COMPACTING:
        return
    try:
        compact(seg)
    except OSError as err:
        seg.path.with_suffix(".compacting").unlink(missing_ok=True)
        log.warning("cannot compact %s: %s; it is intact, only larger than its data",
                    seg.path, err.strerror or err)


class _ProgressReports:
    """Progress from every rank into rank 0's bar: small non-blocking MPI messages after
    each block; rank 0 folds in whatever has arrived whenever it finishes a block of its
    own, and waits for every rank's final message at the end."""

    def __init__(self, comm: Comm, bar: Progress, stops: _Stops):
        self.comm, self.bar, self.stops = comm, bar, stops
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.pending: list[Any] = []
        self.finished_ranks = 0

    def send(self, stats: BlockStats) -> None:
        report = (stats.events, stats.realizations, stats.jets, stats.failed)
        if self.rank == 0:
            self.bar.update(*report)
            self._collect(wait=False)
        else:
            self.pending.append(self.comm.isend(report, dest=0, tag=_PROGRESS_TAG))

    def finish(self) -> None:
        if self.size == 1:
            return
        if self.rank == 0:
            self._collect(wait=True)
        else:
            self.pending.append(self.comm.isend(None, dest=0, tag=_DONE_TAG))
            for request in self.pending:
                request.wait()

    def _collect(self, wait: bool) -> None:
        if self.size == 1:
            return
        from mpi4py import MPI

        status = MPI.Status()
        while self.finished_ranks < self.size - 1:
            if not self.comm.iprobe(source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG, status=status):
                if not wait:
                    return
                if self.stops.signals.received is not None:  # rank 0 was asked to stop
                    self.stops.stop()
                time.sleep(0.05)
                continue
            if status.Get_tag() not in (_PROGRESS_TAG, _DONE_TAG):  # a stop request
                if wait:  # not ours to receive: stand_by answers it
                    raise AnotherRankFailedError
                return
            report = self.comm.recv(source=status.Get_source(), tag=status.Get_tag())
            if status.Get_tag() == _DONE_TAG:
                self.finished_ranks += 1
            else:
                self.bar.update(*report)


__all__ = ["LaunchError", "OutputError", "Pipeline", "RunSummary", "WriteError", "fingerprint",
           "generate"]

"""Running a study's stages: ``jobs`` at a time, each as soon as what it needs is complete.

Stages run in separate processes (``spawn``), each with ``threads`` torch threads: on a
small shared machine, two one-thread processes beat one two-thread process (OpenMP
threads spin while waiting); pre-trainings are planned first, so they start first. Every
stage writes its record when it starts and when it finishes, so a killed study knows what
is complete. A failing stage stops new starts; running ones finish (their work is kept).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from resim.train.config import ConfigError
from resim.train.loop import RunError

from .stages import Stage, write_record
from .work import run_stage

Echo = Callable[[str], None]


def check_outputs(stages: Sequence[Stage], output: Path, overwrite: bool) -> list[Stage]:
    """Stages left from other settings: an error, or (``overwrite``) removed."""
    stale = [s for s in stages if s.record is not None
             and s.record.get("fingerprint") != s.fingerprint]
    if stale and not overwrite:
        names = ", ".join(s.name for s in stale[:6]) + (" ..." if len(stale) > 6 else "")
        raise RunError(f"{output}: {len(stale)} stages were made with other settings "
                       f"({names}); pass --overwrite to remake them, or use another --output")
    for s in stale:
        shutil.rmtree(output / s.name)
        s.record = None
    return stale


def execute(stages: Sequence[Stage], output: Path, jobs: int, threads: int, echo: Echo,
            heartbeat: float = 300.0) -> None:
    """Run every incomplete stage, ``jobs`` at a time, each as soon as what it needs is
    complete. A failing stage stops new starts; running ones finish (their work is kept)."""
    todo = [s for s in stages if not s.complete]
    log = StageLog(output, echo, total=len(stages), done=len(stages) - len(todo))
    if log.done:
        echo(f"study: {log.done} of {log.total} stages complete (reused)")
    if jobs <= 1:
        for s in todo:
            record = log.begin(s)
            log.finish(s, record, _call(s, output, threads))
        return
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn"), initializer=_worker_init,
                             initargs=(threads,)) as executor:
        pool = _Pool(executor, stages, todo, output, jobs, threads, log)
        pool.run(heartbeat)
    if pool.failure is not None:
        s, err = pool.failure
        raise RunError(f"stage {s.name} failed: {err} (its directory: {output / s.name}; "
                       "fix the cause and rerun: complete stages are kept)")


class StageLog:
    """The study's lines (``study 0:01:05 start pretrain/rs3l-s0``) and the stages'
    records: written when a stage starts and when it finishes."""

    def __init__(self, output: Path, echo: Echo, total: int, done: int):
        self.output, self.echo, self.total, self.done = output, echo, total, done
        self.start = time.monotonic()

    def line(self, text: str) -> None:
        s = int(time.monotonic() - self.start)
        self.echo(f"study {s // 3600:d}:{s // 60 % 60:02d}:{s % 60:02d} {text}")

    def begin(self, s: Stage) -> dict[str, Any]:
        record = {"stage": s.name, "kind": s.kind, "fingerprint": s.fingerprint,
                  "complete": False, "started": utc_now(), "load_start": os.getloadavg()[0],
                  "params": s.params}
        write_record(self.output / s.name, record)
        self.line(f"start {s.name}")
        return record

    def finish(self, s: Stage, record: dict[str, Any], result: dict[str, Any]) -> None:
        self.done += 1
        record.update(complete=True, finished=utc_now(), seconds=result.pop("seconds"),
                      load_end=os.getloadavg()[0], result=result)
        write_record(self.output / s.name, record)
        s.record = record
        self.line(f"[{self.done}/{self.total}] done {s.name} in {record['seconds']:.0f} s: "
                  f"{describe(result)}")


class _Pool:
    """The stages waiting (``todo``) and running in worker processes, and the first
    failure (after which nothing new starts)."""

    def __init__(self, executor: Executor, stages: Sequence[Stage], todo: list[Stage],
                 output: Path, jobs: int, threads: int, log: StageLog):
        self.executor, self.todo, self.output = executor, todo, output
        self.jobs, self.threads, self.log = jobs, threads, log
        self.by_name = {s.name: s for s in stages}
        self.running: dict[Future, tuple[Stage, dict[str, Any], float]] = {}
        self.failure: tuple[Stage, BaseException] | None = None

    def run(self, heartbeat: float) -> None:
        """Until every stage ran, or (after a failure) the running ones finished."""
        while self.todo or self.running:
            if self.failure is None:
                self.start_ready()
            if not self.running:
                if self.failure is None and self.todo:
                    raise RunError(f"study: stages {[s.name for s in self.todo]} wait for "
                                   "stages that cannot run")
                break
            self.wait(heartbeat)

    def ready(self, s: Stage) -> bool:
        return all(self.by_name[n].complete for n in s.needs)

    def start_ready(self) -> None:
        """Start the stages whose inputs are complete, as far as workers are free."""
        for s in [s for s in self.todo if self.ready(s)][:self.jobs - len(self.running)]:
            self.todo.remove(s)
            record = self.log.begin(s)
            future = self.executor.submit(run_stage, s.kind, str(self.output / s.name),
                                          s.params, self.threads)
            self.running[future] = (s, record, time.monotonic())

    def wait(self, heartbeat: float) -> None:
        """Until a stage finishes, or ``heartbeat`` seconds (then say what is running)."""
        finished, _ = wait(self.running, timeout=heartbeat, return_when=FIRST_COMPLETED)
        if not finished:
            busy = ", ".join(f"{s.name} ({(time.monotonic() - t) / 60:.0f} min)"
                             for s, _, t in self.running.values())
            self.log.line(f"running: {busy}; {len(self.todo)} stages waiting")
        for future in finished:
            self.collect(future)

    def collect(self, future: Future) -> None:
        s, record, _ = self.running.pop(future)
        try:
            self.log.finish(s, record, future.result())
        except Exception as err:  # any stage failure is reported, naming the stage
            self.failure = self.failure or (s, err)
            self.log.line(f"FAILED {s.name}: {err}")


def _call(s: Stage, output: Path, threads: int) -> dict[str, Any]:
    try:
        return run_stage(s.kind, str(output / s.name), s.params, threads)
    except (ConfigError, RunError) as err:
        raise RunError(f"stage {s.name} failed: {err} (fix the cause and rerun: complete "
                       "stages are kept)") from None


def _worker_init(threads: int) -> None:
    """Set up a worker process: thread counts, and an exit when the study process dies
    (a killed study must not leave orphans writing into stages its rerun redoes)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads or 1)
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(2.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def describe(result: dict[str, Any]) -> str:
    """A stage's result in a few words (for its ``done`` line)."""
    parts = []
    if "jets" in result:
        parts.append(f"{result['groups']} groups, {result['jets']} jets")
    if result.get("train_loss") is not None:
        parts.append(f"{result['epochs']} epochs, {result['steps']} steps, "
                     f"train loss {result['train_loss']:.4g}")
    if result.get("n_train_jets") is not None:
        parts.append(f"{result['n_train_jets']} labelled jets")
    if "accuracy" in result:
        parts.append(f"{result['n_jets']} jets: accuracy {result['accuracy']:.3f}, "
                     f"AUC {result['auc']:.4f}")
    if "encoder" in result and result["encoder"].get("linear_auc") is not None:
        e, b = result["encoder"], result["baseline"]
        parts.append(f"linear probe AUC {e['linear_auc']:.3f} (random {b['linear_auc']:.3f}), "
                     f"effective rank {e['effective_rank']:.1f}, R² |eta| "
                     f"{e['r2_abs_eta']:.2f}")
    return "; ".join(parts)


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


__all__ = ["StageLog", "check_outputs", "describe", "execute", "utc_now"]

"""A scheduler's SIGTERM (or Ctrl-C, or a pre-emption warning) keeps the finished work:
the block in progress is dropped, the finished ones are committed, one line says how
many hard events are saved, the exit code is 128 + the signal, within seconds; MPI ranks
stop together; --resume then completes to the data of an uninterrupted run. And commits
come on time: the first no later than commit_seconds after generation starts."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import time
import types
from pathlib import Path

import pytest

import resim.generate as resim_generate
from resim.card import load_card
from resim.store import SegmentWriter, parts_dir

from .runs import (
    RESUME,
    assert_same_data,
    command,
    committed_events,
    needs_mpi,
    rank_pid,
    run,
    wait_for,
)


@pytest.fixture
def card(tmp_path) -> Path:
    """The resume card with commits due only every minute: whatever is saved when a signal
    comes was committed because of the signal."""
    text = RESUME.read_text()
    assert "commit_seconds = 0.0" in text
    path = tmp_path / "slow_commits.toml"
    path.write_text(text.replace("commit_seconds = 0.0", "commit_seconds = 60.0"))
    return path


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(card: Path, out: Path, ranks: int | None = None) -> subprocess.Popen:
    """Start a run and return once every rank has surely finished a block or more: it has
    worked half a second of CPU time (a block of this card takes ~0.1 s; its whole share
    ~3 s) since it began generating (when its Pythia log appears), however busy the
    machine."""
    proc = subprocess.Popen(command("--card", str(card), "--output", str(out), ranks=ranks),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    began: dict[int, tuple[int, float]] = {}  # rank -> (pid, its CPU time then)

    def worked() -> bool:
        for rank in range(ranks or 1):
            if rank not in began and (parts_dir(out) / f"pythia-rank{rank}.log").exists():
                pid = proc.pid if ranks is None else rank_pid(proc.pid, rank)
                began[rank] = (pid, cpu_seconds(pid))
        return len(began) == (ranks or 1) and all(
            cpu_seconds(pid) - cpu > 0.5 for pid, cpu in began.values())

    wait_for(worked)
    assert proc.poll() is None, proc.communicate()
    return proc


def stopped_line(proc: subprocess.Popen, sig: signal.Signals, out: Path, sent: float) -> int:
    """Check the stop's report; the number of hard events it says are saved."""
    _, err = proc.communicate(timeout=60)
    assert time.monotonic() - sent < 10  # seconds, not the rest of the run
    assert proc.returncode == 128 + sig, (proc.returncode, err)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err  # one line, whatever the number of ranks
    found = re.fullmatch(rf"error: stopped by {sig.name}: (\d+) of 120 hard events are saved "
                         rf"in {re.escape(str(parts_dir(out)))}/; rerun with --resume and the "
                         "run continues", lines[0])
    assert found, lines[0]
    assert "Traceback" not in err
    saved = int(found[1])
    assert saved == committed_events(out) and not out.exists()
    return saved


@pytest.mark.slow
def test_sigterm_keeps_the_finished_blocks_and_resume_completes_bit_identically(
        tmp_path, card, reference):
    out = tmp_path / "term.h5"
    proc = start(card, out)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    saved = stopped_line(proc, signal.SIGTERM, out, sent)
    assert 2 <= saved < 120  # at least the first block (2 hard events)
    result = run("--card", str(card), "--output", str(out), "--resume")
    assert result.returncode == 0, result.stderr
    assert f"{saved} of 120 hard events kept" in result.stderr
    assert_same_data(reference, out)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGUSR1], ids=["SIGINT", "SIGUSR1"])
def test_ctrl_c_and_a_preemption_warning_stop_the_same_way(tmp_path, card, sig):
    out = tmp_path / "stop.h5"
    proc = start(card, out)
    sent = time.monotonic()
    proc.send_signal(sig)
    assert stopped_line(proc, sig, out, sent) >= 2


@pytest.mark.slow
def test_a_second_signal_stops_at_once(tmp_path, card):
    out = tmp_path / "twice.h5"
    proc = start(card, out)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode in (-signal.SIGINT, 128 + signal.SIGINT)


@pytest.mark.slow
def test_a_signal_while_the_pileup_library_is_made_stops_at_the_next_chunk(tmp_path, card):
    """Making the minimum-bias library (here 40 chunks of ~1 s) stops at the next chunk:
    nothing is lost but the library made so far, which is not kept half made."""
    text = card.read_text()
    assert "library = { events = 1000," in text
    big = tmp_path / "big_library.toml"
    big.write_text(text.replace("library = { events = 1000,", "library = { events = 20000,"))
    out = tmp_path / "library.h5"
    proc = subprocess.Popen(command("--card", str(big), "--output", str(out)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    wait_for((parts_dir(out) / "pileup-library-rank0.log").exists)
    began = cpu_seconds(proc.pid)
    wait_for(lambda: cpu_seconds(proc.pid) - began > 0.5)
    assert not (parts_dir(out) / "pythia-rank0.log").exists()  # still making the library
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert stopped_line(proc, signal.SIGTERM, out, sent) == 0
    assert not (parts_dir(out) / "pileup-library.h5").exists()


@needs_mpi
@pytest.mark.slow
@pytest.mark.parametrize("who", ["mpiexec", "rank 1"])
def test_ranks_stop_together_on_a_signal_to_the_job_or_to_one_rank(tmp_path, card, reference,
                                                                   who):
    out = tmp_path / "mpi.h5"
    proc = start(card, out, ranks=2)
    sent = time.monotonic()
    if who == "mpiexec":  # what a scheduler does: mpiexec passes it on to every rank
        proc.send_signal(signal.SIGTERM)
    else:
        os.kill(rank_pid(proc.pid, 1), signal.SIGTERM)
    saved = stopped_line(proc, signal.SIGTERM, out, sent)
    # Both ranks committed their finished blocks (each has a first block of 2 events).
    assert saved >= 4 and len([s for s in _segments(out) if s.done > s.first]) == 2
    if who == "mpiexec":
        result = run("--card", str(card), "--output", str(out), "--resume")
        assert result.returncode == 0, result.stderr
        assert_same_data(reference, out)


def test_a_signal_during_the_set_up_stops_before_anything_is_written(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from resim.cli import main

    real = resim_generate.Pipeline.__init__

    def set_up(self, card):
        os.kill(os.getpid(), signal.SIGTERM)  # the scheduler, while Pythia is set up
        real(self, card)

    monkeypatch.setattr(resim_generate.Pipeline, "__init__", set_up)
    out = tmp_path / "early.h5"
    result = CliRunner().invoke(main, ["generate", "--card", "smoke", "--events", "2",
                                       "--output", str(out), "--quiet"])
    assert result.exit_code == 128 + signal.SIGTERM
    assert result.stderr == ("error: stopped by SIGTERM while Pythia was set up: nothing was "
                             "written\n")
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # as before the run


def _segments(out: Path):
    from resim.store import segments

    return segments(parts_dir(out))


def test_commits_come_no_later_than_commit_seconds(tmp_path, monkeypatch):
    """On a clock where every hard event takes 0.25 s (the blocks' real work is done, but
    the run's clock is this one), the first commit comes within commit_seconds of the
    start, and each after within commit_seconds of the one before."""
    clock = [0.0]
    fake_time = types.SimpleNamespace(monotonic=lambda: clock[0],
                                      perf_counter=time.perf_counter,
                                      process_time=time.process_time)
    real_block = resim_generate.Pipeline.block
    real_commit = SegmentWriter.commit
    commits: list[float] = []

    def block(self, first, last):
        clock[0] += 0.25 * (last - first)
        return real_block(self, first, last)

    def commit(self, tables, done):
        commits.append(clock[0])
        return real_commit(self, tables, done)

    monkeypatch.setattr(resim_generate, "time", fake_time)
    monkeypatch.setattr(resim_generate.Pipeline, "block", block)
    monkeypatch.setattr(SegmentWriter, "commit", commit)
    smoke = load_card("smoke").with_overrides(events=40, output=tmp_path / "c.h5")
    run_card = dataclasses.replace(smoke.run, commit_seconds=2.0)
    resim_generate.generate(dataclasses.replace(smoke, run=run_card), progress=False)
    assert commits[-1] == 10.0 and len(commits) >= 5  # 40 events x 0.25 s
    gaps = [b - a for a, b in zip([0.0, *commits[:-1]], commits, strict=True)]
    assert max(gaps) <= 2.0, gaps
    assert commits[0] <= 2.0 and min(gaps[:-1]) >= 2.0 / 4  # not ever shorter blocks

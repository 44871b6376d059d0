"""Scale-out: MPI ranks give the same data as one process; a run killed at any moment
resumes to exactly the data of an uninterrupted run; faults stop every rank with a clear
message and leave committed work valid."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

import resim
from resim.cli import main
from resim.layout import CHUNK_ROWS
from resim.store import WORTH_COMPACTING, dead_space, parts_dir, segments, validate

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


@needs_mpi
@pytest.mark.slow
def test_one_two_and_three_ranks_make_identical_data(tmp_path, reference):
    # The card's detector-level jets carry pileup (a library the ranks make together, and
    # a pileup-stage variation): its draws are compared too.
    ref = resim.open(reference)
    assert ref.column("jets", "n_pileup").max() > 0 and "repileup" in ref.variations
    for n in (2, 3):
        out = tmp_path / f"n{n}.h5"
        result = run("--card", str(RESUME), "--output", str(out), ranks=n)
        assert result.returncode == 0, result.stderr
        assert result.stdout.count("resim: ") == 1  # one summary, from rank 0
        assert_same_data(reference, out)
        assert resim.open(out).attrs["n_ranks"] == n
        assert len(segments(parts_dir(out))) == n


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_data(tmp_path, reference):
    out = tmp_path / "killed.h5"
    proc = subprocess.Popen(command("--card", str(RESUME), "--output", str(out)))
    wait_for(lambda: committed_events(out) >= 10)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    done = committed_events(out)
    assert 10 <= done < 120 and not out.exists()

    # Without --resume the half-made output is protected.
    refused = run("--card", str(RESUME), "--output", str(out))
    assert refused.returncode == 2 and "--resume" in refused.stderr

    result = run("--card", str(RESUME), "--output", str(out), "--resume")
    assert result.returncode == 0, result.stderr
    assert_same_data(reference, out)
    first = next(s for s in segments(parts_dir(out)) if s.first == 0)
    if "cut back to its last intact commit" in result.stderr:
        # The kill landed inside a commit and damaged it (HDF5 is not crash-proof): the
        # segment was cut back to its last intact commit, and the report says what is
        # made again.
        assert 0 < first.done < done
        assert f"hard events {first.done}-{done - 1} are made again" in result.stderr
    else:
        # What was committed before the kill was kept, not made again.
        assert first.done >= done
        assert f": {done} of 120 hard events kept from the interrupted run" in result.stderr

    again = run("--card", str(RESUME), "--output", str(out), "--resume")
    assert again.returncode == 0 and "groups" in again.stdout  # already complete


@needs_mpi
@pytest.mark.slow
@pytest.mark.parametrize("victim", ["one rank", "all ranks"])
def test_sigkill_under_mpi_then_resume_on_another_rank_count(tmp_path, reference, victim):
    out = tmp_path / "mpi.h5"
    proc = subprocess.Popen(command("--card", str(RESUME), "--output", str(out), ranks=2),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    wait_for(lambda: committed_events(out) >= 12)
    if victim == "one rank":
        os.kill(rank_pid(proc.pid, 1), signal.SIGKILL)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)  # mpiexec must not hang when a rank dies
    assert proc.returncode != 0 and not out.exists()

    result = run("--card", str(RESUME), "--output", str(out), "--resume", ranks=3)
    assert result.returncode == 0, result.stderr
    assert_same_data(reference, out)


def test_corrupt_or_unfinished_segments_are_regenerated(tmp_path, reference, damage_chunk):
    out = tmp_path / "c.h5"
    card = ["--card", str(RESUME), "--output", str(out), "--quiet"]
    assert CliRunner().invoke(main, ["generate", *card]).exit_code == 0
    out.unlink()  # as if killed before the data set was written
    seg = segments(parts_dir(out))[0]
    # Damage one stored chunk of committed constituents: its checksum catches it.
    damage_chunk(seg.path, "constituents/px", 0)
    assert not validate(seg)
    result = CliRunner().invoke(main, ["generate", *card, "--resume"])
    assert result.exit_code == 0, result.output
    assert f"{seg.path.name} is unreadable: discarded" in result.stderr
    assert_same_data(reference, out)


def roll_back(seg, reference: Path, done: int) -> None:
    """Rewrite a segment's journal as if the run had died after writing the rows of hard
    events ``done`` and later, but before recording them."""
    ref = resim.open(reference)
    journal = json.loads(seg.journal.read_text())
    journal["done"] = done
    journal["rows"] = {t: int((ref.column(t, "event") < done).sum())
                       for t in ("jets", "groups", "events")}
    early = ref.column("jets", "event") < done
    journal["rows"]["constituents"] = int(ref.column("jets", "n_constituents")[early].sum())
    journal["commits"] = [c for c in journal["commits"] if c[0] < done]
    seg.journal.write_text(json.dumps(journal))


def test_rows_written_after_the_last_commit_are_ignored(tmp_path, reference):
    out = tmp_path / "t.h5"
    card = ["--card", str(RESUME), "--output", str(out), "--quiet"]
    assert CliRunner().invoke(main, ["generate", *card]).exit_code == 0
    out.unlink()
    seg = segments(parts_dir(out))[0]
    # The extra rows must be dropped and their events made again.
    roll_back(seg, reference, done=60)
    result = CliRunner().invoke(main, ["generate", *card, "--resume"])
    assert result.exit_code == 0, result.output
    assert_same_data(reference, out)


def test_a_full_disk_is_one_clear_error_and_the_run_resumes(tmp_path, reference, monkeypatch):
    from resim import store

    out = tmp_path / "full.h5"
    card = ["--card", str(RESUME), "--output", str(out), "--quiet"]
    real_commit = store.SegmentWriter.commit
    calls = {"n": 0}

    def commit(self, tables, done):
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_commit(self, tables, done)

    monkeypatch.setattr(store.SegmentWriter, "commit", commit)
    result = CliRunner().invoke(main, ["generate", *card])
    assert result.exit_code == 1
    message = result.stderr.strip()
    assert message.startswith("error: cannot write hard events 8-9 to ")
    assert "No space left on device" in message and "--resume" in message
    assert "Traceback" not in message
    monkeypatch.setattr(store.SegmentWriter, "commit", real_commit)
    result = CliRunner().invoke(main, ["generate", *card, "--resume"])
    assert result.exit_code == 0, result.output
    assert_same_data(reference, out)


def test_a_segment_that_cannot_be_compacted_is_kept_as_written(tmp_path, reference,
                                                               monkeypatch):
    import resim.generate

    def no_space(seg):
        seg.path.with_suffix(".compacting").write_bytes(b"part of a copy")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    out = tmp_path / "full.h5"
    card = ["--card", str(RESUME), "--output", str(out), "--quiet"]
    assert CliRunner().invoke(main, ["generate", *card]).exit_code == 0
    out.unlink()
    (seg,) = segments(parts_dir(out))
    roll_back(seg, reference, done=30)  # the resume drops 3/4 of the rows: worth compacting
    monkeypatch.setattr(resim.generate, "compact", no_space)
    result = CliRunner().invoke(main, ["generate", *card, "--resume"])
    assert result.exit_code == 0, result.output
    assert "warning: cannot compact" in result.stderr and "No space left" in result.stderr
    assert not list(parts_dir(out).glob("*.compacting"))
    assert_same_data(reference, out)


def test_a_finished_run_leaves_little_dead_space_and_a_resume_gives_back_what_it_drops(
        tmp_path, reference, monkeypatch):
    import resim.generate

    out = tmp_path / "left.h5"
    card = ["--card", str(RESUME), "--output", str(out), "--quiet"]
    with monkeypatch.context() as m:  # no compaction at all
        m.setattr(resim.generate, "compact", lambda seg: None)
        assert CliRunner().invoke(main, ["generate", *card]).exit_code == 0
    out.unlink()
    (seg,) = segments(parts_dir(out))
    # One commit per block of 2 events, each rewriting the last chunks: the file stays
    # open, so HDF5 reuses much of what that frees — how much depends on the order of
    # allocations (0-10 % dead measured across seeds of this card), never all of the
    # 60 rewrites' worth.
    assert dead_space(seg.path) < 3 * WORTH_COMPACTING
    roll_back(seg, reference, done=30)
    result = CliRunner().invoke(main, ["generate", *card, "--resume"])
    assert result.exit_code == 0, result.output
    assert "30 of 120 hard events kept" in result.stderr
    assert dead_space(seg.path) < 0.01
    assert_same_data(reference, out)


def test_a_segment_damaged_by_a_kill_is_cut_back_and_the_resume_says_so(
        tmp_path, reference, monkeypatch, damage_chunk):
    # Small chunks, so the run's commits straddle many of them (real runs: 65,536 rows).
    monkeypatch.setitem(CHUNK_ROWS, "constituents", 1024)
    out = tmp_path / "cut.h5"
    card = ["--card", str(RESUME), "--output", str(out), "--quiet"]
    assert CliRunner().invoke(main, ["generate", *card]).exit_code == 0
    out.unlink()  # as if killed before the data set was written
    seg = segments(parts_dir(out))[0]
    damage_chunk(seg.path, "constituents/px", 8)  # constituent rows 8192-9215
    intact = [done for done, rows in seg.commits if rows["constituents"] <= 8 * 1024][-1]
    assert 0 < intact < seg.done

    result = CliRunner().invoke(main, ["generate", *card, "--resume"])
    assert result.exit_code == 0, result.output
    assert (f"resuming {out}: {intact} of 120 hard events kept from the interrupted run"
            in result.stderr)
    assert (f"{seg.path.name} was damaged (killed while writing): cut back to its last "
            f"intact commit, hard events {intact}-{seg.done - 1} are made again"
            in result.stderr)
    assert_same_data(reference, out)


def test_resume_refuses_another_card_and_unwritable_output_is_refused(tmp_path, reference):
    out = tmp_path / "x.h5"
    args = ["generate", "--card", str(RESUME), "--output", str(out), "--quiet"]
    assert CliRunner().invoke(main, args).exit_code == 0
    result = CliRunner().invoke(main, [*args, "--resume", "--seed", "99"])
    assert result.exit_code == 2 and "seed 16 (now 99)" in result.stderr
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    result = CliRunner().invoke(main, ["generate", "--card", str(RESUME), "--output",
                                       str(blocker / "out.h5")])
    assert result.exit_code == 2
    assert f"{blocker} is a file, not a folder" in result.stderr


@needs_mpi
@pytest.mark.slow
def test_a_failing_rank_stops_every_rank_with_a_message_naming_it(tmp_path):
    from resim.card import load_card
    from resim.generators.hard_process import HardProcessSource

    from ..generators.lhe import write_lhe

    source = HardProcessSource(load_card(RESUME))
    lhe = write_lhe(tmp_path / "tt.lhe", [source.event(i) for i in range(40)], corrupt=30)
    text = RESUME.read_text().replace(
        'settings = { "Top:gg2ttbar" = true, "Top:qqbar2ttbar" = true, '
        '"PhaseSpace:pTHatMin" = 400.0 }', f'lhe = "{lhe.name}"').replace("events = 120",
                                                                          "events = 40")
    card = tmp_path / "lhe.toml"
    card.write_text(text)
    out = tmp_path / "lhe.h5"
    result = run("--card", str(card), "--output", str(out), ranks=2, timeout=120)
    assert result.returncode != 0
    assert "rank 1:" in result.stderr and "hard event 30" in result.stderr
    assert not out.exists()
    # The other rank stopped at a safe point (after committing what it had finished), not
    # wherever MPI_Abort would have caught it: every commit reads back intact.
    kept = [s for s in segments(parts_dir(out)) if s.done > s.first]
    recorded = [(s.done, s.rows) for s in kept]
    assert kept and all(validate(s) for s in kept)
    assert [(s.done, s.rows) for s in kept] == recorded
    assert result.stderr.count("error:") == 1

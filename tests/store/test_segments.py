"""Crash safety of a segment file at the level of its chunks: what ``validate`` keeps when a
kill in the middle of a commit has damaged data an earlier commit wrote."""

from __future__ import annotations

import json

import h5py
import numpy as np

from resim.layout import CHUNK_ROWS, TABLES, UNSHUFFLED
from resim.store import (
    Segment,
    SegmentWriter,
    compact,
    discard_unfinished,
    segments,
    validate,
)

UNSHUFFLED_NAMES = {f"{t}/{c}" for t, c in UNSHUFFLED}

#: Constituent rows per commit: five commits straddle the 65,536-row chunks.
PER_COMMIT = 30_000


def block(k: int) -> dict[str, dict[str, np.ndarray]]:
    """One commit's rows: two hard events, ``PER_COMMIT`` constituents, numbered so every
    row says which commit wrote it."""
    sizes = {"jets": 8, "constituents": PER_COMMIT, "groups": 4, "events": 2}
    return {t: {c: np.full(sizes[t], k, dtype=dt) for c, dt in cols.items()}
            for t, cols in TABLES.items()}


def write_segment(parts, commits: int = 5) -> Segment:
    writer = SegmentWriter(parts, 0)
    for k in range(commits):
        writer.commit(block(k), done=2 * (k + 1))
    writer.close()
    return writer.segment


def test_the_journal_records_every_commit(tmp_path):
    seg = write_segment(tmp_path)
    (loaded,) = segments(tmp_path)
    assert loaded.done == 10 and loaded.rows["constituents"] == 5 * PER_COMMIT
    assert [done for done, _ in loaded.commits] == [2, 4, 6, 8, 10]
    assert loaded.commits[2][1] == {"jets": 24, "constituents": 90_000, "groups": 12,
                                    "events": 6}
    assert validate(loaded) and loaded.done == seg.done


def test_a_damaged_chunk_cuts_the_segment_back_to_its_last_intact_commit(tmp_path,
                                                                          damage_chunk):
    seg = write_segment(tmp_path)
    assert CHUNK_ROWS["constituents"] == 65_536
    damage_chunk(seg.path, "constituents/px", 1)  # rows 65,536-131,071: commits 2-4
    (found,) = segments(tmp_path)
    assert validate(found)
    # Commits 0 and 1 (rows < 60,000) lie in the intact first chunk; commit 2 reaches
    # into the damaged one, so it and everything after it are made again on resume.
    assert found.done == 4 and found.rows["constituents"] == 2 * PER_COMMIT
    (reloaded,) = segments(tmp_path)
    assert (reloaded.done, reloaded.rows, reloaded.commits) == (found.done, found.rows,
                                                                found.commits)
    with h5py.File(seg.path, "r") as f:
        assert f["constituents/px"].shape == (60_000,) and f["jets/pt"].shape == (16,)
        px = f["constituents/px"][:]
        assert (px[:PER_COMMIT] == 0).all() and (px[PER_COMMIT:] == 1).all()
        assert set(f["events/event"][:]) == {0, 1}


def test_damage_in_the_first_commit_leaves_nothing_to_keep(tmp_path, damage_chunk):
    seg = write_segment(tmp_path)
    damage_chunk(seg.path, "constituents/px", 0)
    assert not validate(segments(tmp_path)[0])


def test_journals_without_per_commit_records_are_one_commit(tmp_path):
    seg = write_segment(tmp_path, commits=2)
    data = json.loads(seg.journal.read_text())
    del data["commits"]
    seg.journal.write_text(json.dumps(data))
    (old,) = segments(tmp_path)
    assert old.commits == [(4, old.rows)] and validate(old) and old.done == 4


def test_compacting_a_segment_drops_the_space_commits_left_and_keeps_every_row(tmp_path):
    rng = np.random.default_rng(7)
    blocks = [{t: {c: (rng.normal(size=len(v)) * 100).astype(v.dtype) for c, v in cols.items()}
               for t, cols in block(k).items()} for k in range(5)]
    writer = SegmentWriter(tmp_path, 0)
    for k, rows in enumerate(blocks):
        writer.commit(rows, done=2 * (k + 1))
    writer.close()
    seg = writer.segment
    # The same rows in one commit: no chunk rewritten, the size the data need.
    (tmp_path / "once").mkdir()
    once = SegmentWriter(tmp_path / "once", 0)
    once.commit({t: {c: np.concatenate([b[t][c] for b in blocks]) for c in TABLES[t]}
                 for t in TABLES}, done=10)
    once.close()
    with h5py.File(seg.path, "r") as f:
        before = {f"{t}/{c}": f[t][c][:] for t in TABLES for c in TABLES[t]}
    # Each commit rewrote the partly filled last chunks elsewhere in the file; HDF5
    # reuses some of the space freed while the file is open, not all of it.
    assert seg.path.stat().st_size > 1.03 * once.nbytes
    compact(seg)
    assert seg.path.stat().st_size < 1.02 * once.nbytes
    with h5py.File(seg.path, "r") as f:
        for name, values in before.items():
            assert f[name].dtype == values.dtype and np.array_equal(f[name][:], values)
            assert f[name].chunks == (CHUNK_ROWS[name.split("/")[0]],)
            assert f[name].compression == "gzip" and f[name].fletcher32
            assert f[name].shuffle == (name not in UNSHUFFLED_NAMES)
    (found,) = segments(tmp_path)
    assert validate(found) and found.done == seg.done and found.commits == seg.commits
    assert not list(tmp_path.glob("*.compacting"))


def test_compaction_keeps_each_column_s_own_filters(tmp_path, monkeypatch):
    """A segment written with other filters (an earlier resim shuffled every column) is
    copied chunk for chunk: its columns must keep the filters their chunks were made with."""
    from resim import layout

    monkeypatch.setattr(layout, "UNSHUFFLED", set())
    rng = np.random.default_rng(3)
    writer = SegmentWriter(tmp_path, 0)
    for k in range(3):
        rows = {t: {c: (rng.normal(size=len(v)) * 100).astype(v.dtype)
                    for c, v in cols.items()} for t, cols in block(k).items()}
        writer.commit(rows, done=2 * (k + 1))
    writer.close()
    monkeypatch.undo()
    seg = writer.segment
    with h5py.File(seg.path, "r") as f:
        before = {f"{t}/{c}": f[t][c][:] for t in TABLES for c in TABLES[t]}
        assert f["constituents/vx"].shuffle
    compact(seg)
    with h5py.File(seg.path, "r") as f:
        assert f["constituents/vx"].shuffle and f["constituents/px"].shuffle
        for name, values in before.items():
            assert np.array_equal(f[name][:], values), name


def test_a_compaction_cut_short_leaves_the_segment_and_its_leftover_is_removed(tmp_path):
    seg = write_segment(tmp_path, commits=2)
    size = seg.path.stat().st_size
    leftover = seg.path.with_suffix(".compacting")
    leftover.write_bytes(b"half a copy")
    discard_unfinished(tmp_path)
    assert not leftover.exists() and seg.path.stat().st_size == size
    (found,) = segments(tmp_path)
    assert validate(found) and found.done == 4

"""A disk that fills up: one line naming the file and the cause, a non-zero exit, no
traceback and no crash of the interpreter; what was committed stays valid, and --resume
continues once there is space again. On a small tmpfs (mounting needs root)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from resim.generators.pileup import LIBRARY_FILE
from resim.store import _SLACK_BYTES, parts_dir, segments

from .runs import RESUME, assert_same_data

BIN = Path(sys.executable).parent

#: ``resim`` with the space reservation switched off, so that HDF5 itself meets the full
#: disk: what happens when a write fails for a reason no reservation foresees (an I/O
#: error, a file system that lies about its free space).
UNRESERVED = """
import contextlib, sys
import resim.store as store
store.reserved = lambda path, nbytes: contextlib.nullcontext()
store._room_for_a_new_file = lambda path, nbytes=0: None
from resim.cli import main
sys.argv = ["resim", *sys.argv[1:]]
main()
"""


@pytest.fixture
def small_disk(tmp_path):
    """``small_disk(bytes)`` mounts a tmpfs of that size (again: resizes it); its path."""
    where = tmp_path / "disk"
    where.mkdir()
    mounted = []

    def mount(size: int) -> Path:
        options = f"size={size}" + (",remount" if mounted else "")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
        mounted.append(size)
        return where

    yield mount
    if mounted:
        subprocess.run(["umount", str(where)], check=True)


def data_bytes(reference: Path) -> int:
    return sum(p.stat().st_size for p in parts_dir(reference).glob("events-*.h5"))


def library_bytes(reference: Path) -> int:
    """The card's pileup library, written before any hard event, and the run's logs."""
    return (parts_dir(reference) / LIBRARY_FILE).stat().st_size + (256 << 10)


def generate(out: Path, *args: str, unreserved: bool = False) -> subprocess.CompletedProcess:
    start = [sys.executable, "-c", UNRESERVED] if unreserved else [str(BIN / "resim")]
    # Not from the repository: `python -c` puts the working folder first on sys.path, and
    # the source folder `resim/` there is not the installed package (whose `generators/`
    # is mapped in as `resim.generators`).
    return subprocess.run([*start, "generate", "--card", str(RESUME), "--output", str(out),
                           "--quiet", *args], capture_output=True, text=True, timeout=300,
                          cwd=out.parent)


def assert_one_line(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 1, (result.returncode, result.stderr)  # not 139: no crash
    message = result.stderr.strip()
    assert message.startswith("error: ") and "\n" not in message, message
    for word in words:
        assert word in message, message


def committed(out: Path) -> int:
    return sum(s.done - s.first for s in segments(parts_dir(out)))


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_resume_continues_when_there_is_space(
        small_disk, reference):
    # Room for the pileup library and about half the data besides what a commit reserves
    # for its worst case.
    disk = small_disk(library_bytes(reference) + _SLACK_BYTES + data_bytes(reference) // 2)
    out = disk / "full.h5"
    result = generate(out)
    assert_one_line(result, "error: cannot write hard events ", str(parts_dir(out)),
                    "No space left on device (", "MB needed", "MB free)",
                    "rerun with --resume to continue")
    assert 0 < committed(out) < 120 and not out.exists()
    refused = generate(out, "--resume")  # still no room: the same error, nothing lost
    assert refused.returncode == 1
    # A segment the stopped run left may be worth compacting, which finds no room either.
    lines = refused.stderr.strip().splitlines()
    assert all(line.startswith("warning: cannot compact ") for line in lines[:-2]), lines
    kept, error = lines[-2:]
    assert kept == f"resuming {out}: {committed(out)} of 120 hard events kept from the " \
                   "interrupted run" and error.startswith("error: cannot write hard events ")
    small_disk(library_bytes(reference) + 4 * (_SLACK_BYTES + data_bytes(reference)))
    result = generate(out, "--resume")
    assert result.returncode == 0, result.stderr
    assert_same_data(reference, out)


@pytest.mark.slow
def test_a_write_hdf5_fails_is_one_line_not_a_crash_and_committed_work_resumes(
        small_disk, reference):
    disk = small_disk(library_bytes(reference) + data_bytes(reference) // 2)
    out = disk / "full.h5"
    result = generate(out, unreserved=True)
    # HDF5's file stays unclosable after the failure: the process ends without freeing
    # it (a segmentation fault, rc 139, before).
    assert_one_line(result, "error: cannot write hard events ", "No space left on device",
                    "--resume")
    assert "Traceback" not in result.stderr and committed(out) > 0
    small_disk(library_bytes(reference) + 4 * (_SLACK_BYTES + data_bytes(reference)))
    result = generate(out, "--resume")
    assert result.returncode == 0, result.stderr
    assert_same_data(reference, out)


@pytest.mark.slow
def test_no_room_for_the_pileup_library_is_one_line(small_disk, reference):
    library = (parts_dir(reference) / LIBRARY_FILE).stat().st_size
    disk = small_disk(library // 2)
    result = generate(disk / "full.h5")
    assert_one_line(result, f"error: cannot write the pileup library {parts_dir(disk / 'full.h5')}",
                    "No space left on device (")
    assert not (parts_dir(disk / "full.h5") / LIBRARY_FILE).exists()


def test_merging_onto_a_full_disk_is_one_line_and_leaves_nothing(small_disk, reference):
    disk = small_disk(data_bytes(reference) // 3)
    result = subprocess.run([str(BIN / "resim"), "merge", str(reference),
                             str(disk / "merged.h5")], capture_output=True, text=True,
                            timeout=120)
    assert_one_line(result, f"error: cannot write {disk / 'merged.h5'}: No space left on "
                    "device (")
    assert list(disk.iterdir()) == []


def test_without_fallocate_the_free_space_is_compared(tmp_path, monkeypatch):
    import errno
    import os
    from collections import namedtuple

    from resim import store

    path = tmp_path / "f.h5"
    path.write_bytes(b"x" * 10)
    with store.reserved(path, 1000):
        pass
    monkeypatch.setattr(store, "_allocate", lambda fd, offset, n: errno.EOPNOTSUPP)
    with store.reserved(path, 1000):  # plenty free
        pass
    statvfs = namedtuple("statvfs", "f_bavail f_frsize")
    monkeypatch.setattr(os, "statvfs", lambda p: statvfs(1, 4096))
    full = r"No space left on device \(0.0 MB needed, 0.0 MB free\)"
    with pytest.raises(OSError, match=full), store.reserved(path, 5000):
        pass
    assert path.stat().st_size == 10

"""Crash-safe output: segment files written block by block, and the data set over them.

A run writes into ``OUTPUT.parts/``. Each rank appends its hard events to a *segment*
file, ``events-<first event>.h5``, one block at a time: append, flush, fsync, and only
then record the block in the segment's journal (``.json``, replaced atomically).
The journal is the truth: rows past it are from a block that never finished and are
ignored. A run killed at any moment therefore leaves committed rows that are intact
(every chunk carries a Fletcher-32 checksum, and :func:`validate` reads them all back
on resume) and a list of which hard events they cover.

When every event is committed, :func:`build_dataset` writes ``OUTPUT`` itself: an HDF5
file whose tables are virtual data sets concatenating the segments in hard-event order,
so the data a reader sees do not depend on how many ranks made them. The data set and
every segment carry the run's identity (``run_id``), and :func:`open_data_set` checks
every segment a data set maps before anything is read: HDF5 itself reads a segment it
cannot find, or another run's file of the same name, as zeros or as that run's data,
without an error. Nothing is copied;
:func:`merge` (``resim merge``) makes a self-contained copy when one is wanted;
:class:`DatasetWriter` writes such a file block by block (also for ``resim convert``).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno
import json
import os
import re
import resource
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePath
from typing import Any

import h5py
import numpy as np
from h5py import h5d, h5p, h5s, h5t

from .errors import FailureError, ResimError
from .layout import CHUNK_ROWS, FORMAT, FORMAT_VERSION, TABLES, filters, stored_columns

#: Start a new segment once a file is this large, which bounds what a segment lost to
#: a crash mid-write can cost (it is regenerated on resume).
SEGMENT_BYTES = 1 << 30


class DatasetError(ResimError, OSError):
    """A path that is not a (finished, whole) resim data set."""


class WriteError(FailureError, RuntimeError):
    """Writing failed (a full disk, a file system gone); what was committed is safe."""


def parts_dir(output: Path) -> Path:
    return output.with_name(output.name + ".parts")


def new_run_id() -> str:
    """The identity of a new run, stored in its data set and in each of its segments."""
    return uuid.uuid4().hex


def hdf5_problem(err: BaseException) -> str:
    """What an h5py error opening a file means, in a few words."""
    text = str(err)
    if isinstance(err, OSError) and err.errno:
        return os.strerror(err.errno)
    if "filter returned failure" in text:
        return "damaged data: a compressed chunk fails its checksum or does not decompress"
    if "file signature not found" in text:
        return "not an HDF5 file: empty, text or another format"
    truncated = re.search(r"truncated file: eof = (\d+).*stored_eof = (\d+)", text)
    if truncated:
        return (f"truncated HDF5 file ({truncated[1]} of its {truncated[2]} bytes are "
                "there: copied or written only in part)")
    first = text.splitlines()[0] if text else type(err).__name__
    return first.replace("Unable to synchronously open file ", "cannot be opened by HDF5 ")


def open_hdf5(path: Path, mode: str = "r", **options: Any) -> h5py.File:
    """``h5py.File`` whose errors are :class:`DatasetError` naming the file and the cause."""
    try:
        return h5py.File(path, mode, **options)
    except OSError as err:  # h5py raises OSError (or a subclass) for anything unreadable
        raise DatasetError(f"{path}: {hdf5_problem(err)}") from None


def _write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ------------------------------------------------------------------ writing, full disks
#
# HDF5 cannot recover from a write that fails (a full disk, a quota, an I/O error): the
# file's metadata cache stays half flushed, every later call on the file fails, and
# closing it, or freeing any object of it, then crashes the interpreter (a segmentation
# fault at exit, after dozens of tracebacks). So every write here first reserves the disk
# space it may need (``fallocate`` past the end of the file, given back afterwards): a
# full disk or quota is met before HDF5 writes anything, and the file stays as the last
# flush left it. Should HDF5 fail anyway (an I/O error), its file is abandoned, never
# closed or freed, and the process exits without the interpreter's clean-up
# (:func:`exit_if_abandoned`), which is what would crash.

#: Room for what a write adds besides its rows: the partly filled last chunk of every
#: column, rewritten whole; chunk indices and object headers; deflate's worst case.
_SLACK_BYTES = sum(CHUNK_ROWS[t] * np.dtype(d).itemsize for t, cs in TABLES.items()
                   for d in cs.values()) + (1 << 20)

#: Room for a new file's metadata: object headers and chunk indices, ~7 kB a column.
METADATA_BYTES = 7 * 1024 * sum(len(columns) for columns in TABLES.values())

#: HDF5 files whose writing failed, and what refers to them: kept until the process ends.
_abandoned: list[Any] = []

_FALLOC_FL_KEEP_SIZE = 1


def _allocate(fd: int, offset: int, nbytes: int) -> int:
    """``fallocate(fd, KEEP_SIZE, offset, nbytes)``: 0, or the errno of its failure (an
    errno meaning "not supported here" where the call or file system lacks it)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fallocate = libc.fallocate
    except (OSError, AttributeError):
        return errno.EOPNOTSUPP
    fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
    return 0 if fallocate(fd, _FALLOC_FL_KEEP_SIZE, offset, nbytes) == 0 else ctypes.get_errno()


def _no_space(path: Path, nbytes: int, err: int = errno.ENOSPC) -> OSError:
    try:
        st = os.statvfs(path.parent)
        free = f", {st.f_bavail * st.f_frsize / 1e6:.1f} MB free"
    except OSError:
        free = ""
    return OSError(err, f"{os.strerror(err)} ({nbytes / 1e6:.1f} MB needed{free})", str(path))


@contextlib.contextmanager
def reserved(path: Path, nbytes: int) -> Iterator[None]:
    """Disk space for ``nbytes`` more in ``path`` (an existing file) while the block runs;
    an OSError (ENOSPC, EDQUOT) naming the file if there is none. Without ``fallocate``
    (some network file systems) the free space is compared instead."""
    fd = os.open(path, os.O_WRONLY)
    try:
        failed = _allocate(fd, os.fstat(fd).st_size, nbytes)
        if failed in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            st = os.statvfs(path)
            failed = 0 if st.f_bavail * st.f_frsize >= nbytes else errno.ENOSPC
        if failed:
            raise _no_space(path, nbytes, failed)
        yield
    finally:
        with contextlib.suppress(OSError):  # give back what the writes did not use
            os.ftruncate(fd, os.fstat(fd).st_size)
        os.close(fd)


def _room_for_a_new_file(path: Path, nbytes: int = METADATA_BYTES) -> None:
    """Before HDF5 creates ``path`` (its first bytes cannot be reserved)."""
    st = os.statvfs(path.parent)
    if st.f_bavail * st.f_frsize < nbytes:
        raise _no_space(path, nbytes)


def write_bytes(tables: dict[str, dict[str, np.ndarray]]) -> int:
    """Disk space appending ``tables`` may take at most."""
    raw = sum(v.nbytes for columns in tables.values() for v in columns.values())
    return raw + raw // 50 + _SLACK_BYTES


@contextlib.contextmanager
def writing(f: h5py.File, path: Path, nbytes: int, *refs: Any) -> Iterator[None]:
    """Reserve ``nbytes`` in ``path`` (``f``'s file), run the block's writes and flush
    them. If HDF5 fails anyway, ``f`` (and ``refs``, objects of it) are abandoned — never
    closed or freed — and an OSError naming the file and the cause is raised; the caller
    must not touch ``f`` again, and the process must end with :func:`exit_if_abandoned`."""
    with reserved(path, nbytes):
        try:
            yield
            f.flush()
        except (OSError, RuntimeError) as err:  # what h5py raises for HDF5's failures
            abandon(f, err, *refs)
            raise OSError(_errno_of(err), _cause_of(err), str(path)) from None


def abandon(*objects: Any) -> None:
    """Keep HDF5 objects of a file whose writing failed alive until the process ends (see
    above), and make sure it ends without freeing them."""
    if not _abandoned:
        atexit.register(exit_if_abandoned, 1)  # for callers other than the command line
    _abandoned.append(objects)


@contextlib.contextmanager
def hdf5_to_write(path: Path, mode: str = "w") -> Iterator[h5py.File]:
    """An HDF5 file to write (with :func:`writing`; ``mode`` "w" makes a new one), closed
    at the end unless its writing failed and it was abandoned."""
    if mode == "w":
        _room_for_a_new_file(path)
    f = h5py.File(path, mode)
    try:
        yield f
    finally:
        if not is_abandoned(f):
            f.close()


def is_abandoned(f: h5py.File | None) -> bool:
    return any(objects[0] is f for objects in _abandoned)


def exit_if_abandoned(code: int) -> None:
    """After an HDF5 write failed, end the process with ``code`` at once (``os._exit``,
    after flushing the standard streams): the interpreter's clean-up would crash freeing
    the abandoned file's objects. Otherwise return."""
    if not _abandoned:
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _errno_of(err: BaseException) -> int:
    found = re.search(r"errno = (\d+)", str(err))
    return int(found[1]) if found else getattr(err, "errno", None) or errno.EIO


def _cause_of(err: BaseException) -> str:
    """What an HDF5 write error says went wrong, without HDF5's buffer addresses."""
    found = re.search(r"error message = '([^']*)'", str(err))
    if found:
        return found[1]
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return f"HDF5 could not write ({text})"


@dataclass
class Segment:
    """What a segment's journal records: hard events [first, done) and their rows, and the
    same after every commit (so a damaged file can be cut back to its last intact commit)."""

    path: Path
    first: int
    done: int
    rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLES, 0))
    commits: list[tuple[int, dict[str, int]]] = field(default_factory=list)

    @property
    def journal(self) -> Path:
        return self.path.with_suffix(".json")

    def save(self) -> None:
        data = asdict(self)
        data["path"] = self.path.name
        _write_json_atomically(self.journal, data)

    @classmethod
    def load(cls, journal: Path) -> Segment:
        data = json.loads(journal.read_text())
        # The totals are the truth; per-commit records (absent in older journals) lead up
        # to them.
        commits = [(done, rows) for done, rows in data.get("commits", [])
                   if done < data["done"]]
        if data["done"] > data["first"]:
            commits.append((data["done"], data["rows"]))
        return cls(path=journal.with_name(data["path"]), first=data["first"],
                   done=data["done"], rows=data["rows"], commits=commits)

    def cut(self, commits: int) -> None:
        """Forget every commit after the first ``commits`` (>= 1; ``save`` records it)."""
        self.commits = self.commits[:commits]
        self.done, rows = self.commits[-1]
        self.rows = dict(rows)


def _create_tables(f: h5py.File) -> None:
    """Every table's columns in ``f``: empty, resizable, with the layout's chunking and
    filters."""
    for table, columns in TABLES.items():
        group = f.create_group(table)
        for name, dtype in columns.items():
            group.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype,
                                 chunks=(CHUNK_ROWS[table],), **filters(table, name))


class SegmentWriter:
    """Appends blocks of hard events to one new segment file, kept open until :meth:`close`.

    Each commit ends with HDF5's flush and an fsync before the journal records it, so
    between commits the file on disk is complete, as if closed (a run killed there leaves
    a segment that opens and reads back whole). Keeping it open spares every commit
    reopening the file and its 36 columns and reading back (decompressing) the partly
    filled last chunk of each — together more than writing a block's rows took.
    """

    def __init__(self, parts: Path, first: int, run_id: str | None = None):
        self.segment = Segment(path=parts / f"events-{first:010d}.h5", first=first, done=first)
        _room_for_a_new_file(self.segment.path)
        self._file: h5py.File | None = h5py.File(self.segment.path, "w")
        with writing(self._file, self.segment.path, METADATA_BYTES):
            if run_id is not None:
                self._file.attrs["run_id"] = run_id
            _create_tables(self._file)
        self._columns = {t: {c: self._file[t][c] for c in cols} for t, cols in TABLES.items()}
        _fsync(self.segment.path)
        self.segment.save()

    @property
    def nbytes(self) -> int:
        return self.segment.path.stat().st_size

    def commit(self, tables: dict[str, dict[str, np.ndarray]], done: int) -> None:
        """Append one block (every table) covering hard events up to ``done``; then record it."""
        assert self._file is not None, "commit after close (or after a failed one)"
        seg = self.segment
        try:
            with writing(self._file, seg.path, write_bytes(tables), self._columns):
                for table, columns in tables.items():
                    n0 = seg.rows[table]
                    n = len(next(iter(columns.values())))
                    for name, values in columns.items():
                        ds = self._columns[table][name]
                        ds.resize((n0 + n,))
                        ds[n0:] = values
        except OSError:
            if is_abandoned(self._file):
                self._file, self._columns = None, {}  # never to be closed
            raise
        _fsync(seg.path)
        for table, columns in tables.items():
            seg.rows[table] += len(next(iter(columns.values())))
        seg.done = done
        seg.commits.append((done, dict(seg.rows)))
        seg.save()

    def close(self) -> None:
        """Close the file (nothing more to write: every commit is already on disk)."""
        if self._file is not None:
            self._columns = {}
            file, self._file = self._file, None
            file.close()


#: A finished segment is compacted when more than this fraction of it is dead space.
WORTH_COMPACTING = 0.05


def compact(seg: Segment) -> None:
    """Rewrite a finished segment without the space it holds but does not use.

    Every commit rewrites the partly filled last chunk of each column. While the file
    stays open HDF5 reuses most of the space that frees, but what it had freed when a run
    was killed, and the chunks of rows a resume drops, stay in the file as dead space.
    The compressed chunks are copied as they are (no decompression) into a new file with
    the segment's attributes (its run identity) and each column's own chunking and
    filters (a segment written by another resim version keeps its own), which then
    replaces the segment atomically; the journal still
    describes it. A crash during the copy leaves the segment as it was and a
    ``.compacting`` file, which :func:`discard_unfinished` removes.
    """
    tmp = seg.path.with_suffix(".compacting")

    def copy_chunks(group: h5py.Group, name: str, old: h5py.Dataset) -> None:
        new = group.create_dataset(
            name, shape=old.shape, maxshape=(None,), dtype=old.dtype, chunks=old.chunks,
            compression=old.compression, compression_opts=old.compression_opts,
            shuffle=old.shuffle, fletcher32=old.fletcher32)
        for i in range(old.id.get_num_chunks()):
            offset = old.id.get_chunk_info(i).chunk_offset
            mask, data = old.id.read_direct_chunk(offset)
            new.id.write_direct_chunk(offset, data, mask)

    with h5py.File(seg.path, "r") as src, hdf5_to_write(tmp) as dst, writing(
            dst, tmp, seg.path.stat().st_size + _SLACK_BYTES):
        _copy_tables(src, dst, copy_chunks)
    _fsync(tmp)
    os.replace(tmp, seg.path)
    _fsync(seg.path.parent)


def dead_space(path: Path) -> float:
    """Fraction of a segment file that is neither its chunks nor a generous allowance for
    its metadata: what :func:`compact` would give back."""
    with h5py.File(path, "r") as f:
        stored = sum(f[table][name].id.get_chunk_info(i).size
                     for table, columns in TABLES.items() for name in columns
                     for i in range(f[table][name].id.get_num_chunks()))
    size = path.stat().st_size
    return max(0, size - stored - METADATA_BYTES) / size


def discard_unfinished(parts: Path) -> None:
    """Remove what a compaction cut short by a crash left (the segment itself is intact)."""
    for path in parts.glob("events-*.compacting"):
        path.unlink()


def segments(parts: Path) -> list[Segment]:
    """Every segment journal in ``parts``, by first event."""
    return sorted((Segment.load(j) for j in parts.glob("events-*.json")), key=lambda s: s.first)


def validate(seg: Segment) -> bool:
    """Read every committed row back (checksums verify each chunk) and keep what is intact.

    Rows past the journal are dropped. If a committed chunk is damaged — a kill in the
    middle of a commit can hit the chunk that commit was completing, or the file space
    HDF5 had just freed and reused — the segment is cut back to its last commit whose rows
    all read back, and the journal says so: its later events are made again on resume.
    False if nothing committed is left (unreadable file, or damage in the first commit).
    """
    if seg.done <= seg.first:
        return False
    try:
        with h5py.File(seg.path, "r") as f:
            intact = {table: min(_readable_rows(f[table][name], n) for name in TABLES[table])
                      for table, n in seg.rows.items()}
            keep = len(seg.commits)
            while keep and any(rows > intact[t] for t, rows in seg.commits[keep - 1][1].items()):
                keep -= 1
            if not keep:
                return False
            damaged = keep < len(seg.commits)
            if damaged:
                seg.cut(keep)
            longer = [f"{table}/{name}" for table, n in seg.rows.items()
                      for name in TABLES[table] if f[table][name].shape[0] != n]
    except (OSError, KeyError, RuntimeError, ValueError):
        return False
    if longer:  # rows past the journal: cut off (an OSError here, a full disk, is raised)
        with hdf5_to_write(seg.path, "r+") as f, writing(f, seg.path, _SLACK_BYTES):
            for column in longer:
                f[column].resize((seg.rows[column.split("/")[0]],))
    if damaged:
        seg.save()
    return True


def _readable_rows(ds: h5py.Dataset, n: int) -> int:
    """How many of the first ``n`` rows of ``ds`` read back: all, or up to the first chunk
    that fails its checksum (found by re-reading a failed stretch chunk by chunk)."""
    if ds.shape[0] < n:
        n = ds.shape[0]
    chunk = ds.chunks[0]
    step = chunk * 16
    for a in range(0, n, step):
        try:
            ds[a:min(a + step, n)]
        except (OSError, RuntimeError, ValueError):
            for c in range(a, min(a + step, n), chunk):
                try:
                    ds[c:min(c + chunk, n)]
                except (OSError, RuntimeError, ValueError):
                    return c
    return n


def discard(seg: Segment) -> None:
    for path in (seg.path, seg.journal):
        path.unlink(missing_ok=True)


def missing_ranges(done: list[Segment], n_events: int) -> list[tuple[int, int]]:
    """Hard-event ranges [a, b) in [0, n_events) that no segment has committed."""
    gaps, at = [], 0
    for seg in sorted(done, key=lambda s: s.first):
        if seg.first > at:
            gaps.append((at, seg.first))
        at = max(at, seg.done)
    if at < n_events:
        gaps.append((at, n_events))
    return gaps


def build_dataset(output: Path, segs: list[Segment], n_events: int,
                  attrs: dict[str, Any]) -> None:
    """Write ``output``: virtual tables over the segments, in hard-event order."""
    segs = sorted(segs, key=lambda s: s.first)
    at = 0
    for s in segs:
        if s.first != at:
            break
        at = s.done
    if at != n_events:
        covered = [(s.first, s.done) for s in segs]
        raise RuntimeError(f"segments do not cover hard events 0..{n_events} exactly: {covered}")
    tmp = output.with_name(output.name + ".tmp")
    mappings = sum(len(_pieces(table, segs)) * len(columns) for table, columns in TABLES.items())
    with hdf5_to_write(tmp) as f, writing(f, tmp, _SLACK_BYTES + 512 * mappings):
        for table, columns in TABLES.items():
            group = f.create_group(table)
            pieces = _pieces(table, segs)
            total = sum(n for _, n in pieces)
            for name, dtype in columns.items():
                if total == 0:
                    group.create_dataset(name, shape=(0,), dtype=dtype)
                else:
                    _virtual_column(group, name, dtype, pieces, total)
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        for key, value in attrs.items():
            f.attrs[key] = value
    os.replace(tmp, output)


def _pieces(table: str, segs: list[Segment]) -> list[tuple[bytes, int]]:
    """(source file relative to the data set, rows) of every segment with rows in ``table``."""
    return [(_source_name(f"{s.path.parent.name}/{s.path.name}"), s.rows[table])
            for s in segs if s.rows[table]]


def _source_name(path: str) -> bytes:
    """A file name as a virtual data set's mapping stores it: HDF5 reads ``%`` there as the
    start of a pattern (``%b``), so a literal one is written ``%%``."""
    return path.replace("%", "%%").encode()


def _virtual_column(group: h5py.Group, name: str, dtype: type,
                    pieces: list[tuple[bytes, int]], total: int) -> None:
    """One column as a virtual data set concatenating ``pieces``.

    Straight through h5py's low-level API: its ``VirtualLayout`` builds selections in
    Python, ~0.5 ms per mapping, which at a thousand segments times 36 columns kept rank
    0 (and every other rank, waiting) busy for half a minute at the end of a run; this
    way it is a C call per mapping.
    """
    dcpl = h5p.create(h5p.DATASET_CREATE)
    dcpl.set_layout(h5d.VIRTUAL)
    source = f"{group.name.strip('/')}/{name}".encode()
    at = 0
    for path, n in pieces:
        vspace = h5s.create_simple((total,))
        vspace.select_hyperslab((at,), (n,))
        dcpl.set_virtual(vspace, path, source, h5s.create_simple((n,)))
        at += n
    h5d.create(group.id, name.encode(), h5t.py_create(np.dtype(dtype), logical=1),
               h5s.create_simple((total,)), dcpl=dcpl)


class DatasetWriter:
    """A new self-contained data set, written in appended blocks (``resim merge``, ``resim
    convert``).

    Rows go to ``TARGET.tmp`` with the layout's chunking and compression; :meth:`finish`
    sets the attributes and renames the file to ``TARGET``, so no reader ever sees a
    half-written data set. Leaving the ``with`` block without :meth:`finish` (an error,
    an interrupt) removes the temporary file. A write the disk has no room for is a
    :class:`WriteError` before anything of it is written.
    """

    def __init__(self, target: Path):
        self.target = Path(target)
        self.tmp = self.target.with_name(self.target.name + ".tmp")
        self.rows = dict.fromkeys(TABLES, 0)
        self._file: h5py.File | None = None
        try:
            _room_for_a_new_file(self.tmp)
            self._file = h5py.File(self.tmp, "w")
            with self._writing(METADATA_BYTES):
                # Resizable, like the segments, so chunks may exceed a short table.
                _create_tables(self._file)
        except BaseException:
            self.abort()
            raise

    @contextlib.contextmanager
    def _writing(self, nbytes: int) -> Iterator[None]:
        assert self._file is not None, "write after finish"
        try:
            with writing(self._file, self.tmp, nbytes):
                yield
        except OSError as err:
            if is_abandoned(self._file):
                self._file = None  # never to be closed
            raise WriteError(f"cannot write {self.target}: {err.strerror}") from None

    def append(self, tables: dict[str, dict[str, np.ndarray]]) -> None:
        """Append rows to some or all tables; each table's block must have every column."""
        assert self._file is not None, "append after finish"
        for table, columns in tables.items():
            if set(columns) != set(TABLES[table]):
                raise KeyError(f"table {table}: columns {sorted(columns)} are not the "
                               f"layout's {sorted(TABLES[table])}")
            if len({len(v) for v in columns.values()}) != 1:
                raise ValueError(f"table {table}: columns of unequal length "
                                 f"{sorted({len(v) for v in columns.values()})}")
        with self._writing(write_bytes(tables)):
            for table, columns in tables.items():
                n0 = self.rows[table]
                n1 = n0 + len(next(iter(columns.values())))
                for name, values in columns.items():
                    ds = self._file[table][name]
                    ds.resize((n1,))
                    ds[n0:n1] = values
                self.rows[table] = n1

    def finish(self, attrs: dict[str, Any]) -> None:
        """Write the attributes (``format`` and ``format_version`` unless given) and
        move the file into place."""
        assert self._file is not None, "finish after finish"
        with self._writing(_SLACK_BYTES):
            self._file.attrs["format"] = FORMAT
            self._file.attrs["format_version"] = FORMAT_VERSION
            for key, value in attrs.items():
                self._file.attrs[key] = value
        self._file.close()
        self._file = None
        os.replace(self.tmp, self.target)

    def abort(self) -> None:
        """Remove the temporary file (an abandoned one stays open, see `writing`)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()


def open_data_set(path: Path, **h5py_options: Any) -> h5py.File:
    """Open a data set's file for reading, after checking that it is one and that every
    segment it maps is there, whole, and this run's. Raises :class:`DatasetError`.

    ``h5py_options`` go to ``h5py.File`` (e.g. the trainer's chunk-cache sizes).

    HDF5 reads the rows of a segment it cannot open as zeros, without an error, and looks
    for segments by the names they had when the data set was written
    (``top.h5.parts/...``, relative to the data set's folder): a renamed pair
    (``b.h5`` + ``b.h5.parts``) read as all zeros, and a copy put beside another run's
    folder of that name read the other run's data. So each segment is looked for in the
    folder named after the data set (``b.h5.parts``) as well as where it was written;
    where it is found it must carry the data set's run identity (files written before
    resim stored one are checked by their columns' lengths only) and hold every row the
    data set maps. Segments found only under the data set's new name are read through a
    copy of the data set's mapping (metadata only, kept in memory) that names them.

    A read spanning many segments opens all their files together, and with ~1000
    segments (a 1000-rank run) the usual limit of 1024 open files per process silently
    corrupted a full-column read the same way. So the soft limit is raised as far as
    needed (up to the hard limit); past the hard limit the open fails with a message
    saying so.
    """
    path = Path(path)
    if path.is_dir():
        raise DatasetError(f"{path}: a folder, not a data set file")
    try:
        f = h5py.File(path, "r", **h5py_options)
    except OSError as err:
        problem = hdf5_problem(err)
        if problem.startswith("not an HDF5 file"):
            problem = f"not a resim data set ({problem})"
        raise DatasetError(f"{path}: {problem}") from None
    try:
        if f.attrs.get("format") != FORMAT:
            raise DatasetError(f"{path}: not a resim data set (no format={FORMAT!r} "
                               "attribute)")
        columns = stored_columns(int(f.attrs.get("format_version", 1)))
        for table, names in columns.items():
            for name in names:
                if not isinstance(f.get(f"{table}/{name}"), h5py.Dataset):
                    raise DatasetError(f"{path}: not a whole resim data set (no column "
                                       f"{table}/{name})")
        mapped = _mapped_rows(f)
        if mapped:
            _allow_open_files(path, len(mapped))
            folder = _checked_folder(path, mapped, f.attrs.get("run_id"), columns)
            if folder is not None:
                relinked = _relinked(f, folder, h5py_options)
                f.close()
                f = relinked
    except BaseException:
        f.close()
        raise
    return f


def read_rows(f: h5py.File, path: Path, table: str, name: str, start: int = 0,
              stop: int | None = None) -> np.ndarray:
    """Rows [start, stop) of a column of the data set ``f`` (opened from ``path``); a
    failure is a :class:`DatasetError` (see :func:`read_error`)."""
    try:
        return f[table][name][start:stop]
    except OSError as err:
        raise read_error(f, path, table, name, start, stop, err) from None


def read_error(f: h5py.File, path: Path, table: str, name: str, start: int,
               stop: int | None, err: OSError) -> DatasetError:
    """Reading rows [start, stop) of a column failed (a damaged chunk, a segment gone since
    the data set was opened): the error, naming the data set, the rows and the segments
    they are in."""
    column = f[table][name]
    stop = column.shape[0] if stop is None else min(stop, column.shape[0])
    names = []
    if column.is_virtual:
        plist = column.id.get_create_plist()
        for i in range(plist.get_virtual_count()):
            (lo,), (hi,) = plist.get_virtual_vspace(i).get_select_bounds()
            if lo < stop and hi >= start:
                names.append(plist.get_virtual_filename(i).replace("%%", "%"))
    where = (f" (segment {', '.join(names)})" if 0 < len(names) <= 3 else
             f" ({len(names)} segments, {names[0]} ... {names[-1]})" if names else "")
    return DatasetError(f"{path}: cannot read {table}/{name} rows {start}-{stop - 1}"
                        f"{where}: {hdf5_problem(err)}")


def _mapped_rows(f: h5py.File) -> dict[str, dict[str, int]]:
    """Rows each segment file (as the mapping names it) gives each table it maps into."""
    mapped: dict[str, dict[str, int]] = {}
    for table, columns in TABLES.items():
        column = f[table][next(iter(columns))]
        if not column.is_virtual:
            continue
        plist = column.id.get_create_plist()
        for i in range(plist.get_virtual_count()):
            name = plist.get_virtual_filename(i).replace("%%", "%")
            rows = mapped.setdefault(name, {})
            # (HDF5 does not keep the extent of a source selected whole: count the rows
            # the mapping fills in the data set)
            rows[table] = rows.get(table, 0) + plist.get_virtual_vspace(i).get_select_npoints()
    return mapped


#: Segments checked by this process: (data set, its file's identity) -> the folder they
#: are in and each segment's file identity then. Readers reopen a data set often (each
#: DataLoader worker, the trainer every few million constituents), and checking 1,000
#: segments takes seconds; a segment replaced or removed since changes its identity.
_checked: dict[tuple[Path, tuple[int, ...]], tuple[Path | None, tuple[tuple[int, ...], ...]]] = {}


def _file_identity(path: Path) -> tuple[int, ...]:
    s = path.stat()
    return (s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns)


def _checked_folder(path: Path, mapped: dict[str, dict[str, int]], run_id: str | None,
                    columns: dict[str, tuple[str, ...]]) -> Path | None:
    """:func:`_segment_folder`, remembered while no file involved changes."""
    key = (path.resolve(), _file_identity(path))

    def identities(folder: Path | None) -> tuple[tuple[int, ...], ...]:
        base = path.parent if folder is None else folder
        return tuple(_file_identity(base / (name if folder is None else PurePath(name).name))
                     for name in mapped)

    if key in _checked:
        folder, seen = _checked[key]
        with contextlib.suppress(OSError):
            if identities(folder) == seen:
                return folder
    folder = _segment_folder(path, mapped, run_id, columns)
    _checked[key] = (folder, identities(folder))
    return folder


def _segment_folder(path: Path, mapped: dict[str, dict[str, int]], run_id: str | None,
                    columns: dict[str, tuple[str, ...]]) -> Path | None:
    """Where this data set's segments are: None where its mapping says (HDF5 finds them
    itself), or the folder named after the data set when it was renamed with it. Raises
    a :class:`DatasetError` saying what is missing (and how to fix it) otherwise."""
    written = {PurePath(name).parent for name in mapped}
    own = parts_dir(path)
    places: list[Path | None] = [None]  # as written: relative to the data set's folder
    if written != {PurePath(own.name)}:
        places.append(own)  # renamed (or moved) together with the data set
    found = []
    for folder in places:
        problem = _segments_problem(path, mapped, run_id, columns, folder)
        if problem is None:
            return folder
        found += [problem] if problem != _NO_FOLDER else []
    was = "/, ".join(sorted(str(w) for w in written))
    if not found and len(places) == 1:
        raise DatasetError(f"{path}: its segment folder {was}/ is missing; keep a data set "
                           "and its .parts folder side by side (move them together), or read "
                           "a `resim merge`d copy")
    if not found:
        raise DatasetError(f"{path}: its segments are missing: neither {was}/ (where it was "
                           f"written) nor {own.name}/ is beside it; rename or move a data set "
                           "and its .parts folder together (b.h5 with b.h5.parts), or read a "
                           "`resim merge`d copy")
    if any(_OTHER_RUN in problem for problem in found):
        fix = (f"its own segments are not here: keep {path.name} beside the .parts folder "
               "it was made with (rename or move both together)")
    else:
        fix = (f"remove {path.name} and rerun `resim generate --card CARD --output {path} "
               "--resume` to remake what is missing or damaged, or read a `resim merge`d copy")
    raise DatasetError(f"{path}: {'; '.join(found)}; {fix}")


_NO_FOLDER = "no folder"
_OTHER_RUN = "belongs to another run"


def _segments_problem(path: Path, mapped: dict[str, dict[str, int]], run_id: str | None,
                      columns: dict[str, tuple[str, ...]], folder: Path | None) -> str | None:
    """What is wrong with the segments looked for in ``folder`` (None: where the mapping
    says): None if nothing, ``_NO_FOLDER`` if the folder is not there."""
    where = {name: (path.parent / name if folder is None else folder / PurePath(name).name)
             for name in mapped}
    if not all(p.parent.is_dir() for p in where.values()):
        return _NO_FOLDER
    shown = {name: (name if folder is None else f"{folder.name}/{PurePath(name).name}")
             for name in mapped}
    missing = [shown[n] for n, p in where.items() if not p.is_file()]
    if missing:
        return (f"segment {missing[0]} is missing ({len(missing)} of its {len(mapped)} "
                "segments missing)")
    for name, rows in mapped.items():
        problem = _segment_problem(where[name], rows, run_id, columns)
        if problem:
            return f"segment {shown[name]} {problem}"
    return None


def _segment_problem(segment: Path, rows: dict[str, int], run_id: str | None,
                     columns: dict[str, tuple[str, ...]]) -> str | None:
    try:
        f = h5py.File(segment, "r")
    except OSError as err:
        return f"cannot be read: {hdf5_problem(err)}"
    with f:
        if run_id is not None and f.attrs.get("run_id") != run_id:
            return f"{_OTHER_RUN} (its run identity is not this data set's)"
        for table, n in rows.items():
            for name in columns[table]:
                column = f.get(f"{table}/{name}")
                if not isinstance(column, h5py.Dataset):
                    return f"has no column {table}/{name}"
                if column.shape[0] < n:
                    return (f"holds {column.shape[0]} rows of {table}/{name}, the data set "
                            f"reads {n} (changed after the data set was written)")
    return None


def _relinked(f: h5py.File, folder: Path, h5py_options: dict[str, Any]) -> h5py.File:
    """The data set ``f`` in memory, its mappings naming the segments in ``folder``."""

    def relink(group: h5py.Group, name: str, old: h5py.Dataset) -> None:
        if not old.is_virtual:
            group.create_dataset(name, data=old[()])
            return
        plist = old.id.get_create_plist()
        dcpl = h5p.create(h5p.DATASET_CREATE)
        dcpl.set_layout(h5d.VIRTUAL)
        for i in range(plist.get_virtual_count()):
            source = folder.resolve() / PurePath(plist.get_virtual_filename(i)).name
            vspace = plist.get_virtual_vspace(i)
            # A source selected whole comes back without its extent.
            dcpl.set_virtual(vspace, _source_name(str(source)),
                             plist.get_virtual_dsetname(i).encode(),
                             h5s.create_simple((vspace.get_select_npoints(),)))
        h5d.create(group.id, name.encode(), old.id.get_type(), old.id.get_space(), dcpl=dcpl)

    copy = h5py.File(f"resim-relinked-{uuid.uuid4().hex}.h5", "w", driver="core",
                     backing_store=False, **h5py_options)
    _copy_tables(f, copy, relink)
    return copy


def _copy_tables(src: h5py.File, dst: h5py.File,
                 column: Callable[[h5py.Group, str, h5py.Dataset], None]) -> None:
    """Give ``dst`` the attributes of ``src`` and, for every column of every table, what
    ``column(group in dst, name, column in src)`` makes of it."""
    for key, value in src.attrs.items():
        dst.attrs[key] = value
    for table, columns in TABLES.items():
        group = dst.create_group(table)
        for name in columns:
            column(group, name, src[table][name])


#: Open files a reader needs besides the segments (Python, libraries, DataLoader pipes).
_SPARE_FILES = 256


def _allow_open_files(path: Path, sources: int) -> None:
    if not sources:
        return
    need = sources + _SPARE_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return
    if hard != resource.RLIM_INFINITY and hard < need:
        raise DatasetError(f"{path}: reading it opens its {sources} segment files at once, but "
                      f"this process may open at most {hard} files (hard limit, `ulimit -Hn`); "
                      "raise that limit, or read the data set with fewer segments (`resim "
                      "merge` it where the limit allows)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def merge(source: Path, target: Path, rows_per_read: int = 1 << 20) -> None:
    """Copy a data set (virtual tables over segments) into one self-contained file, in the
    current format (a format-1 file's missing columns are derived as when it is read)."""
    from .dataset import JetDataset

    with JetDataset(source) as ds, DatasetWriter(target) as out:
        for table, columns in TABLES.items():
            n = len(ds.column(table, next(iter(columns))))
            for a in range(0, n, rows_per_read):
                out.append({table: {name: ds.column(table, name, a, a + rows_per_read)
                                    for name in columns}})
        out.finish({**ds.attrs, "format_version": FORMAT_VERSION})

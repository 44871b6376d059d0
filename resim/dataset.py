"""Reading resim data sets: ``ds = resim.open(path)``; ``ds[a:b]`` is an awkward array.

Only the slice asked for is read from disk. Each jet record has the fields
``pt, eta, phi, mass, n_constituents, group, event, variation, realization, seed, label,
level, n_b_hadrons, n_c_hadrons, splitting, n_pileup`` (``variation``, ``label`` and
``level`` as strings) and ``constituents``, a list of records ``px, py, pz, E, pid, charge,
vx, vy, vz, d0, dz, d0_err, dz_err, kind, vertex, weight, pileup``. All jets of one group
are contiguous. Older files read the same (:func:`resim.layout.with_derived`): those of
format version 1 (before detector-level jets and heavy flavour) have particle-level jets,
their constituents' impact parameters and kinds derived as for particle-level jets
(:func:`resim.layout.particle_level_columns`), and heavy-flavour columns -1 (unknown);
those before version 3 have no pileup (``n_pileup`` 0, tracks of the primary vertex,
weights 1).

The HDF5 file is opened on first use and reopened after unpickling, so a data set can be
handed to DataLoader worker processes (h5py handles cannot cross a fork or a pickle).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import awkward as ak
import h5py
import numpy as np

from .layout import LEVELS, PILEUP_COLUMNS, TABLES, with_derived
from .store import DatasetError, open_data_set, parts_dir, read_rows

JET_FIELDS = tuple(TABLES["jets"])
CONSTITUENT_FIELDS = tuple(TABLES["constituents"])


class JetDataset:
    """A resim data set on disk. ``len(ds)`` jets; ``ds[a:b]`` reads jets a…b-1."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.is_dir():
            hint = (f": a run's segment folder; open {self.path.name[:-len('.parts')]}"
                    if self.path.name.endswith(".parts") else "")
            raise DatasetError(f"{self.path}: a folder, not a data set file{hint}")
        if not self.path.is_file():
            if parts_dir(self.path).is_dir():
                raise DatasetError(f"{self.path}: this run has not finished; finish it with "
                                   "`resim generate --card CARD --resume` before reading")
            raise DatasetError(f"{self.path}: no such file")
        self._file: h5py.File | None = None
        f = self._h5  # checks that it is a data set, and every segment it reads
        for key in ("variations", "labels"):
            if key not in f.attrs:
                self.close()
                raise DatasetError(f"{self.path}: not a whole resim data set (no {key!r} "
                                   "attribute)")
        self.variations: tuple[str, ...] = tuple(str(v) for v in f.attrs["variations"])
        self.labels: tuple[str, ...] = tuple(str(v) for v in f.attrs["labels"])
        self.levels: tuple[str, ...] = LEVELS
        #: Columns the file does not store (those added in later format versions).
        self.derived = {t: {c for c in cols if c not in f[t]} for t, cols in TABLES.items()}
        counts = self.column("jets", "n_constituents")
        self._offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])

    # -- file handle, opened lazily (and again in each worker process) -----------------
    @property
    def _h5(self) -> h5py.File:
        if self._file is None:
            self._file = open_data_set(self.path)  # enough open files for every segment
        return self._file

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"] = None
        return state

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> JetDataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- metadata ------------------------------------------------------------------------
    @property
    def attrs(self) -> dict[str, Any]:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v)
                for k, v in self._h5.attrs.items()}

    @property
    def card(self) -> str:
        """The text of the card that made this data set."""
        return str(self._h5.attrs["card"])

    @property
    def summary(self) -> dict[str, Any]:
        return json.loads(self._h5.attrs["summary"])

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __repr__(self) -> str:
        return (f"<resim data set {self.path}: {len(self)} jets, variations "
                f"{list(self.variations)}, labels {list(self.labels)}>")

    # -- data ----------------------------------------------------------------------------
    def column(self, table: str, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """One column of one table (``jets``, ``constituents``, ``groups``, ``events``)."""
        if table not in TABLES or name not in TABLES[table]:
            raise KeyError(f"no column {table}/{name}")
        if name in self.derived[table]:
            return self._derived(table, name, start, stop)
        return read_rows(self._h5, self.path, table, name, start, stop)

    def _derived(self, table: str, name: str, start: int, stop: int | None) -> np.ndarray:
        """A column an older file lacks, made up from the columns it has as
        :func:`resim.layout.with_derived` says."""
        needs = ("pt",) if table == "jets" else ("charge",) if name in PILEUP_COLUMNS else (
            "px", "py", "pz", "vx", "vy", "vz", "pid", "charge")
        stored = {c: read_rows(self._h5, self.path, table, c, start, stop) for c in needs}
        return with_derived(table, stored, only=(name,))[name]

    def table(self, table: str) -> ak.Array:
        """A whole small table (``groups`` or ``events``) as an awkward record array."""
        return ak.zip({c: self.column(table, c) for c in TABLES[table]})

    def __getitem__(self, key: int | slice) -> ak.Array | ak.Record:
        if isinstance(key, int | np.integer):
            i = int(key) + len(self) if key < 0 else int(key)
            if not 0 <= i < len(self):
                raise IndexError(f"jet {key} out of range for {len(self)} jets")
            return self[i:i + 1][0]
        if not isinstance(key, slice):
            raise TypeError("index a data set with an integer or a slice")
        start, stop, step = key.indices(len(self))
        if step != 1:
            raise ValueError("slices of a data set must be contiguous (step 1)")
        stop = max(start, stop)
        return self._read(start, stop)

    def _read(self, start: int, stop: int) -> ak.Array:
        jets = {c: self.column("jets", c, start, stop) for c in JET_FIELDS}
        lo, hi = int(self._offsets[start]), int(self._offsets[stop])
        cons = ak.zip({c: self.column("constituents", c, lo, hi) for c in CONSTITUENT_FIELDS})
        fields: dict[str, Any] = dict(jets)
        for name, names in (("variation", self.variations), ("label", self.labels),
                            ("level", self.levels)):
            fields[name] = ak.Array(list(names))[jets[name].astype(np.int64)]
        fields["constituents"] = ak.unflatten(cons, jets["n_constituents"])
        return ak.zip(fields, depth_limit=1)

    def chunks(self, size: int = 65536):
        """Iterate over the data set ``size`` jets at a time."""
        for a in range(0, len(self), size):
            yield self[a:a + size]


def open(path: str | Path) -> JetDataset:
    """Open a resim data set for reading."""
    return JetDataset(path)


def repeated_file(paths: Sequence[Path]) -> tuple[Path, Path] | None:
    """The first two of ``paths`` that name the same file however spelled (``a.h5``,
    ``./a.h5``), else None: read twice, its jets would count twice."""
    seen: dict[Path, Path] = {}
    for path in paths:
        if path.resolve() in seen:
            return seen[path.resolve()], path
        seen[path.resolve()] = path
    return None

"""The Top Quark Tagging reference data set (Kasieczka, Plehn et al., arXiv:1902.09914) as a
resim data set.

Upstream format (the data set's description; ParT's ``convert_top_datasets.py`` and
JetNet's ``TopTagging`` reader): three files ``train.h5`` (1.2M jets), ``val.h5`` and
``test.h5`` (400k each), each one pandas DataFrame written with ``to_hdf(path,
key="table")``. One row per jet; columns ``E_i, PX_i, PY_i, PZ_i`` (GeV) for constituents
i = 0…199, sorted by pT and zero-padded, then ``truthE, truthPX, truthPY, truthPZ`` (the
top quark; zero for QCD jets), ``ttv`` (which split; redundant with the file) and
``is_signal_new`` (1 top, 0 QCD).

The file is read with h5py alone, a block of rows at a time, in either layout pandas may
have used: ``format="fixed"`` (``table/block<i>_items`` name the columns of the 2-D
``table/block<i>_values``) or ``format="table"`` (PyTables table ``table/table`` whose
``values_block_<i>`` fields hold the columns listed, as a pickled list of names, in its
``values_block_<i>_kind`` attribute — unpickled with nothing but lists and strings allowed).

The jets are Delphes' (detector-level, ``level = "detector"``), but only four-momenta are
stored: resim's ``pid`` and ``charge`` are 0 and the vertex is the origin, so every
constituent is a neutral hadron (``kind``; ``is_neutral_hadron`` 1, the other kinds 0,
charge 0, d0 = dz = 0 and their uncertainties 0) — see ``docs/benchmarks.md``.
"""

from __future__ import annotations

import io
import pickle
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..store import hdf5_problem
from .common import ConvertError, JetBlock, check_output, write_benchmark

KEY = "table"
LABELS = ("qcd", "top")
MOMENTUM = ("E", "PX", "PY", "PZ")
TRUTH = ("truthE", "truthPX", "truthPY", "truthPZ")
LABEL_COLUMN = "is_signal_new"


class _NamesOnly(pickle.Unpickler):
    """Unpickles lists, tuples and strings; refuses every class (no code runs)."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes | np.bytes_) else str(value)


def _pickled_names(path: Path, raw: Any, what: str) -> list[str]:
    try:
        names = _NamesOnly(io.BytesIO(bytes(raw))).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        raise ConvertError(f"{path}: cannot read the column names in {what} ({err})") from err
    return [_text(n) for n in names]


class PandasFrame:
    """The columns of a DataFrame pandas wrote with ``to_hdf`` (fixed or table format),
    read a row range at a time with h5py. Use as a context manager."""

    def __init__(self, path: str | Path, key: str = KEY):
        self.path = Path(path)
        if self.path.is_dir():
            raise ConvertError(f"{self.path}: a folder, not a file")
        if not self.path.is_file():
            raise ConvertError(f"{self.path}: no such file")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as err:
            raise ConvertError(f"{self.path}: {hdf5_problem(err)}") from err
        try:
            if key not in self._file:
                raise ConvertError(f"{self.path}: no key {key!r} (not written by pandas "
                                   f"to_hdf(..., key={key!r}); keys: {list(self._file)})")
            group = self._file[key]
            kind = _text(group.attrs.get("pandas_type", b""))
            #: column name -> (HDF5 data set, field or None, column index or None, transposed)
            self._where: dict[str, tuple[h5py.Dataset, str | None, int | None, bool]] = {}
            if kind == "frame":
                self._fixed(group)
            elif kind == "frame_table":
                self._table(group)
            else:
                raise ConvertError(f"{self.path}: {key!r} is not a pandas DataFrame "
                                   f"(pandas_type {kind or 'missing'!r})")
        except BaseException:
            self._file.close()
            raise

    def _fixed(self, group: h5py.Group) -> None:
        n_blocks = int(group.attrs["nblocks"])
        lengths = set()
        for i in range(n_blocks):
            values = group[f"block{i}_values"]
            transposed = bool(values.attrs.get("transposed", True))
            lengths.add(values.shape[0] if transposed else values.shape[-1])
            for j, name in enumerate(group[f"block{i}_items"][:]):
                self._where[_text(name)] = (values, None, j, transposed)
        self.n_rows = lengths.pop() if lengths else 0

    def _table(self, group: h5py.Group) -> None:
        table = group["table"]
        for field in table.dtype.names:
            if field == "index":
                continue
            if re.fullmatch(r"values_block_\d+", field):
                names = _pickled_names(self.path, table.attrs[f"{field}_kind"],
                                       f"{table.name}.{field}_kind")
                for j, name in enumerate(names):
                    self._where[name] = (table, field, j, True)
            else:  # a data column: its own field
                self._where[field] = (table, field, None, True)
        self.n_rows = table.shape[0]

    @property
    def columns(self) -> list[str]:
        return list(self._where)

    def __len__(self) -> int:
        return self.n_rows

    def read(self, names: list[str], start: int, stop: int) -> dict[str, np.ndarray]:
        """Rows [start, stop) of the columns ``names``; each source block is read once."""
        missing = [n for n in names if n not in self._where]
        if missing:
            raise KeyError(f"{self.path}: no columns {missing}")
        sources: dict[tuple[int, str | None], np.ndarray] = {}
        out = {}
        for name in names:
            ds, field, j, transposed = self._where[name]
            key = (id(ds), field)
            if key not in sources:
                if field is not None:
                    sources[key] = ds.fields(field)[start:stop]
                else:
                    sources[key] = ds[start:stop] if transposed else ds[:, start:stop].T
            block = sources[key]
            out[name] = block if j is None else block[:, j]
        return out

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> PandasFrame:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _n_constituents(frame: PandasFrame) -> int:
    """How many constituent slots the columns describe (200 in the real files)."""
    index = {p: {int(m.group(1)) for c in frame.columns
                 if (m := re.fullmatch(rf"{p}_(\d+)", c))} for p in MOMENTUM}
    n = max((max(s) + 1 for s in index.values() if s), default=0)
    missing = [f"{p}_{i}" for p in MOMENTUM for i in range(max(n, 1)) if i not in index[p]]
    if LABEL_COLUMN not in frame.columns:
        missing.append(LABEL_COLUMN)
    if missing:
        shown = ", ".join(missing[:8]) + (f" (and {len(missing) - 8} more)"
                                          if len(missing) > 8 else "")
        raise ConvertError(f"{frame.path}: not a Top Tagging file: DataFrame {KEY!r} "
                           f"lacks columns {shown}")
    return n


def padded_block(e: np.ndarray, px: np.ndarray, py: np.ndarray, pz: np.ndarray,
                 label: np.ndarray, truth: dict[str, np.ndarray] | None) -> JetBlock:
    """Zero-padded (jets, slots) four-momenta as resim jets: slots with E > 0 are
    constituents, sorted by decreasing pT."""
    mask = e > 0
    pt = np.hypot(px.astype(np.float64), py.astype(np.float64))
    order = np.argsort(np.where(mask, -pt, np.inf), axis=1, kind="stable")
    keep = np.take_along_axis(mask, order, axis=1)

    def flat(a: np.ndarray) -> np.ndarray:
        return np.take_along_axis(a, order, axis=1)[keep]

    n_flat = int(keep.sum())
    zero = np.zeros(n_flat, np.float32)
    constituents = {"px": flat(px), "py": flat(py), "pz": flat(pz), "E": flat(e),
                    "pid": np.zeros(n_flat, np.int32), "charge": np.zeros(n_flat, np.int8),
                    "vx": zero, "vy": zero, "vz": zero}
    n = len(label)
    t: dict[str, np.ndarray]
    if truth is None:
        t = {"pid": np.zeros(n, np.int32), **{k: np.zeros(n) for k in
                                               ("pt", "eta", "phi", "mass")}}
    else:
        te, tx, ty, tz = (np.asarray(truth[c], np.float64) for c in TRUTH)
        tpt = np.hypot(tx, ty)
        with np.errstate(divide="ignore", invalid="ignore"):
            eta = np.where(tpt > 0, np.arcsinh(tz / np.where(tpt > 0, tpt, 1.0)), 0.0)
        t = {"pid": np.where((label == 1) & (te > 0), 6, 0).astype(np.int32), "pt": tpt,
             "eta": eta, "phi": np.arctan2(ty, tx),
             "mass": np.sqrt(np.maximum(te ** 2 - tpt ** 2 - tz ** 2, 0.0))}
    return JetBlock(counts=keep.sum(axis=1).astype(np.int64), constituents=constituents,
                    label=label, truth=t)


def _blocks(frame: PandasFrame, n_slots: int, rows: int) -> Iterator[JetBlock]:
    has_truth = all(c in frame.columns for c in TRUTH)
    names = {p: [f"{p}_{i}" for i in range(n_slots)] for p in MOMENTUM}
    wanted = [*(c for p in MOMENTUM for c in names[p]), LABEL_COLUMN,
              *(TRUTH if has_truth else ())]
    for a in range(0, len(frame), rows):
        cols = frame.read(wanted, a, min(a + rows, len(frame)))
        e, px, py, pz = (np.stack([cols[c] for c in names[p]], axis=1) for p in MOMENTUM)
        raw = cols[LABEL_COLUMN]
        bad = np.flatnonzero((raw != 0) & (raw != 1))
        if bad.size:
            raise ConvertError(f"{frame.path}: row {a + bad[0]}: {LABEL_COLUMN} is "
                               f"{raw[bad[0]].item()!r}, not 0 or 1")
        yield padded_block(e, px, py, pz, raw.astype(np.int64),
                           {c: cols[c] for c in TRUTH} if has_truth else None)


def convert_toptagging(path: str | Path, output: str | Path, *, split: str | None = None,
                       overwrite: bool = False, progress: bool = True,
                       rows: int = 20_000) -> dict[str, Any]:
    """Convert one Top Tagging file (``train.h5``, ``val.h5`` or ``test.h5``) into a resim
    data set ``output``, ``rows`` jets at a time. Returns its summary."""
    path, output = Path(path), Path(output)
    check_output(output, overwrite, [path])
    with PandasFrame(path) as frame:
        n_slots = _n_constituents(frame)
        return write_benchmark(output, _blocks(frame, n_slots, rows), labels=LABELS,
                               source="toptagging", files=[path], total=len(frame),
                               split=split, versions={}, progress=progress)

"""The trainer's data pipeline: resim files -> groups, splits, views -> batch dicts.

Three layers:

* :class:`JetData`: one or more resim files (``--data`` paths) as one data set. At
  construction it reads only the small per-jet index columns (group, event, label,
  variation, constituent counts); group ids become dense and unique across files, label
  and variation names the union of the files' names in order of first appearance, and a
  ``classes`` mapping (class name -> label names) turns labels into class indices.
  :meth:`JetData.particles` reads the constituents of any set of jets: sorted, coalesced
  into a few contiguous ranges per file, one h5py slice per range and column, then
  :meth:`Particles.from_flat` on all jets at once. No loop over jets anywhere.
* :class:`PretrainBatches`: pre-training batches of ``batch_groups`` groups x ``views``
  realizations, the views of a group adjacent, chosen by a :class:`~resim.train.views.ViewPolicy`.
* :class:`LabelledJets`: one row per jet of chosen variations, for fine-tuning and
  evaluation, with a deterministic labelled ``fraction``.

Both are torch ``IterableDataset`` s yielding the batch dict of the trainer::

    x float32 (B, P, F), v float32 (B, P, 4), mask bool (B, P),
    group int64 (B,), label int64 (B,) (class index), variation int64 (B,)

**Splits** are by hard event, so a group's realizations (and the objects of one event)
never straddle splits: a fixed hash of the event index into [0, 1) is compared with the
cumulative fractions (train < 0.8 <= val < 0.9 <= test by default). The hash does not
depend on the training seed, so pre-training, fine-tuning and evaluation agree on splits.
A file with a ``split`` attribute (``resim convert ... --split test`` of an upstream
benchmark's test file) is that split as a whole: all its groups are in it, whatever the
fractions, so ``resim evaluate`` on a converted test file uses every jet of it.
Subsets (``fraction``, ``max_jets``) take groups in the order of a second fixed hash of
the group id: deterministic and nested (the 1 % subset is inside the 10 % one).

**Determinism.** An epoch's plan (which groups, in which order, in which batch) is a
pure function of (seed, epoch) computed from the in-memory index, and batch ``b``'s
random choices (views, augmentation) come from a generator seeded with (seed, epoch, b).
So the batches do not depend on the number of DataLoader workers (worker w of W makes
this rank's batches w, w + W, ..., which the DataLoader returns round-robin, i.e. in
order), and resuming at ``start_batch`` yields exactly the tail of the epoch without
reading the skipped batches. Under DDP, rank r of R takes global batches r, r + R, ...;
every rank gets the same number (the remainder is padded by wrapping around to the
epoch's first batches, or dropped with ``drop_last``) so collective calls never hang.

**Shuffling, chunk-friendly.** Files are gzip-chunked (8192 jets / 65536 constituents),
so reading groups in a fully random order would decompress every chunk once per group.
Instead (see :class:`Streaming`) the split's groups are cut into *runs* of consecutive
groups (run boundaries move every epoch), runs into *blocks*; blocks are shuffled over the
whole split, and the runs of ``mix`` consecutive blocks of that order are shuffled
together. A batch is then a few contiguous reads from a few places in the files, and the
chunks it touches are reused by the next batches from HDF5's chunk cache. Consecutive hard
events are independent, so keeping runs together costs nothing in randomness that matters.

Worker processes: h5py handles are opened lazily in the process that reads (and reopened
after a fork or unpickling), never shared. Use ``persistent_workers=False`` (what
:func:`make_loader` does) so that ``set_epoch`` reaches the workers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from resim.dataset import CONSTITUENT_FIELDS, DatasetError, JetDataset, repeated_file
from resim.layout import IMPACT_COLUMNS, LEVELS, PARTICLE, PILEUP_COLUMNS, with_derived
from resim.splits import SPLITS, split_of, unit_hash
from resim.store import open_data_set, parts_dir, read_error

from ..ranges import ranges
from .features import FEATURES, Particles, features
from .views import ViewPolicy, choose_views

Augment = Callable[[Particles, np.random.Generator], Particles]
Paths = str | os.PathLike | Sequence[str | os.PathLike]

#: Salt of the fixed hash of subsets (by group; splits: resim.splits), and the random streams.
_SUBSET_SALT = 0xF2AC_7105
_PLAN_STREAM = 1
_BATCH_STREAM = 2

#: Constituents between two wanted jets below which one read covers both (a few chunks'
#: worth of bytes is cheaper to copy than an extra h5py call per column).
_READ_GAP = 8192
#: HDF5 chunk cache per column (and per segment file of a virtual data set): holds the
#: chunks of a default shuffle window (see Streaming), ~6 MB per float column. Measured on
#: a 12k-jet file: reading + padding ran 5x faster than with HDF5's default 1 MB.
_CACHE_BYTES = 16 << 20
_CACHE_SLOTS = 4099
#: Files are closed (and reopened on the next read) after this many constituents were
#: read, which bounds what the caches of many segment files can hold to a few hundred MB.
_REOPEN_AFTER = 1 << 23
#: Constituent columns the trainer reads: not the pileup bookkeeping (a candidate's
#: four-momentum already carries its mitigation weight; its truth origin is no input).
_READ = tuple(c for c in CONSTITUENT_FIELDS if c not in PILEUP_COLUMNS)


# -- splits (resim.splits) and subsets (pure) -------------------------------------------
def check_split(split: str) -> str:
    if split not in (*SPLITS, "all"):
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, all; got {split!r}")
    return split


@dataclass(frozen=True)
class Streaming:
    """How shuffled epochs stay chunk-friendly (units: groups for pre-training, jets else).

    ``run`` consecutive units are read together; ``block`` consecutive units form a block;
    blocks are shuffled over the whole split and the runs of ``mix`` consecutive blocks of
    that order are shuffled together. A batch of B units thus reads about B / run
    contiguous ranges, drawn from ``mix`` random places of the split.
    """

    run: int = 16
    block: int = 512
    mix: int = 8

    def __post_init__(self) -> None:
        for name in ("run", "block", "mix"):
            _check_int(f"streaming.{name}", getattr(self, name), 1)


def shuffled_order(n: int, rng: np.random.Generator, streaming: Streaming) -> np.ndarray:
    """A random permutation of ``range(n)`` made of runs of consecutive numbers (see
    :class:`Streaming`); the run boundaries shift with a random offset every call."""
    if n == 0:
        return np.zeros(0, np.int64)
    run = streaming.run
    offset = int(rng.integers(run))
    edges = np.unique(np.concatenate([[0], np.arange(offset, n, run), [n]]))
    starts, lengths = edges[:-1], np.diff(edges)
    block_of_run = np.arange(len(starts)) // max(1, streaming.block // run)
    n_blocks = int(block_of_run[-1]) + 1
    place = np.empty(n_blocks, np.int64)
    place[rng.permutation(n_blocks)] = np.arange(n_blocks)
    window = place[block_of_run] // streaming.mix
    order = np.lexsort((rng.random(len(starts)), window))
    return ranges(starts[order], lengths[order])[0]


def rank_batches(n_batches: int, rank: int, world_size: int, remainder: str) -> np.ndarray:
    """The global batch indices rank ``rank`` of ``world_size`` takes: r, r + R, ...

    ``remainder`` says what happens when R does not divide the batch count: ``"pad"``
    wraps around to the first batches so every rank has the same number, ``"drop"`` drops
    the last ones (same number too), ``"keep"`` gives some ranks one batch more.
    """
    if remainder == "pad":
        per_rank = -(-n_batches // world_size)
        return (np.arange(per_rank) * world_size + rank) % max(n_batches, 1)
    if remainder == "drop":
        return np.arange(n_batches // world_size) * world_size + rank
    return np.arange(rank, n_batches, world_size)


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _union(lists: Sequence[Sequence[str]]) -> tuple[str, ...]:
    """Names in order of first appearance."""
    return tuple(dict.fromkeys(name for names in lists for name in names))


# -- the data set: index in memory, constituents on demand ---------------------------------
def _as_paths(paths: Paths) -> list[Path]:
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    out = [Path(p) for p in paths]
    if not out:
        raise ValueError("data: no data set paths given")
    return out


def _open_checked(path: Path) -> JetDataset:
    """``resim.open(path)``, which checks the file and every segment it reads (HDF5 reads a
    missing segment as zeros); its errors name the path and say what is wrong."""
    if not path.is_file() and not parts_dir(path).is_dir():
        raise FileNotFoundError(f"{path}: no such data set file")
    return JetDataset(path)  # also: a run that has not finished


class JetData:
    """One or more resim files as one data set (see the module docstring).

    ``level``: the jets read, ``"particle"`` or ``"detector"`` (every file must have
    them), or ``"auto"`` (default): particle-level jets if every file has them, else
    detector-level if every file has those (converted benchmarks are detector level).
    :attr:`level` is the level read. At particle level the jets of ``stage = "detector"``
    variations are left out: they are copies of their base variation's.

    ``classes`` maps class names to lists of label names (default: every label its own
    class, in label order); groups whose label is in no class are left out of every
    loader built on this data set. Per group (dense index g, files in the order given):
    ``group_start``, ``group_size`` (its jets are rows start .. start+size-1 of the
    concatenated files), ``group_event``, ``group_file``, ``group_id`` (the id in its
    file), ``group_label``, ``group_class`` (-1: in no class). Per jet: ``jet_variation``
    (index into ``variations``), ``jet_count`` (constituents) and ``jet_first`` (first
    jet of its variation in its group). ``file_split`` / ``group_split``: index into
    :data:`SPLITS` fixed by a file's ``split`` attribute, -1 where the hash decides.
    """

    def __init__(self, paths: Paths, classes: Mapping[str, Sequence[str]] | None = None,
                 level: str = "auto"):
        self.paths = tuple(_as_paths(paths))
        twice = repeated_file(self.paths)
        if twice is not None:  # its groups would count twice, in every split
            raise DatasetError(f"{twice[0]} and {twice[1]}: the same data set given twice")
        self.level = self._choose_level(level)
        index = [self._read_index(p, LEVELS.index(self.level)) for p in self.paths]
        self.labels = _union([i["labels"] for i in index])
        self.variations = _union([i["variations"] for i in index])
        #: each file's ``run_id`` attribute ("" if it has none): which run made it
        self.run_ids = tuple(i["run_id"] for i in index)
        self.classes, class_of_label = self._check_classes(classes)
        label_code = {name: k for k, name in enumerate(self.labels)}
        variation_code = {name: k for k, name in enumerate(self.variations)}
        jets_before = np.cumsum([0] + [len(i["count"]) for i in index])
        self.file_start = jets_before  # jets of file f: file_start[f] .. file_start[f+1]-1

        def cat(part: Callable[[int, dict[str, Any]], np.ndarray]) -> np.ndarray:
            return np.concatenate([part(f, i) for f, i in enumerate(index)])

        def recode(names: str, code: dict[str, int], values: str):
            """File codes -> codes into the unified names."""
            return lambda f, i: np.array([code[n] for n in i[names]] + [0], np.int16)[i[values]]

        self.group_start = cat(lambda f, i: i["start"] + jets_before[f])
        self.group_size = cat(lambda f, i: i["size"])
        self.group_event = cat(lambda f, i: i["event"])
        self.group_id = cat(lambda f, i: i["id"])
        self.group_file = cat(lambda f, i: np.full(len(i["start"]), f, np.int16))
        self.group_label = cat(recode("labels", label_code, "label"))
        #: the split a file's ``split`` attribute puts all its groups in (-1: by event hash)
        self.file_split = np.array([i["split"] for i in index], np.int64)
        self.group_split = self.file_split[self.group_file]
        self.group_class = class_of_label[self.group_label]
        self.jet_variation = cat(recode("variations", variation_code, "variation"))
        self.jet_count = cat(lambda f, i: i["count"])
        self.jet_offset = cat(lambda f, i: i["offset"])  # within its file
        self.jet_first = cat(lambda f, i: i["first"])
        self._handles: list[dict[str, h5py.Dataset] | None] = [None] * len(self.paths)
        self._files: list[h5py.File | None] = [None] * len(self.paths)
        self._pid = os.getpid()
        self._read_since_open = 0

    def _choose_level(self, level: str) -> str:
        """The level to read (see the class docstring), checked against every file."""
        if level not in ("auto", *LEVELS):
            raise ValueError(f"level must be auto, {' or '.join(LEVELS)}; got {level!r}")
        held = []
        for path in self.paths:
            with _open_checked(path) as ds:
                held.append({LEVELS[k] for k in np.unique(ds.column("jets", "level"))})
        for path, h in zip(self.paths, held, strict=True):
            if not h:  # not a level problem: its card's cuts kept no jet
                raise DatasetError(f"{path}: holds no jets")
        if level == "auto":
            common = next((lv for lv in LEVELS if all(lv in h for h in held)), None)
            if common is None:
                raise DatasetError("data: the files hold jets of different levels ("
                                   + "; ".join(f"{p}: {', '.join(sorted(h)) or 'none'}"
                                               for p, h in zip(self.paths, held, strict=True))
                                   + "): no level is in all of them")
            level = common
        for path, h in zip(self.paths, held, strict=True):
            if level not in h:
                raise DatasetError(f"{path}: has no {level}-level jets (it has "
                                   f"{', '.join(sorted(h)) or 'none'})")
        return level

    @staticmethod
    def _read_index(path: Path, level: int = PARTICLE) -> dict[str, Any]:
        with _open_checked(path) as ds:
            col = {c: ds.column("jets", c) for c in
                   ("group", "event", "label", "variation", "n_constituents", "level")}
            labels, variations = ds.labels, ds.variations
            split = str(ds.attrs.get("split", ""))
            run_id = str(ds.attrs.get("run_id", ""))  # converted benchmarks have none
            stages = ds.summary.get("stages", {}) if ds.attrs.get("summary") else {}
        # The chosen level's jets (a group's are contiguous: rows by group, level, ...);
        # offsets stay those of the file. At particle level, copies are left out.
        offset = np.cumsum(col["n_constituents"], dtype=np.int64) - col["n_constituents"]
        keep = col.pop("level") == level
        if level == PARTICLE:
            copies = [k for k, v in enumerate(variations) if stages.get(v) == "detector"]
            keep &= ~np.isin(col["variation"], copies)
        col = {k: v[keep] for k, v in col.items()}
        offset = offset[keep]
        if split not in ("", *SPLITS):
            raise DatasetError(f"{path}: its split attribute is {split!r}; expected one of "
                               f"{', '.join(SPLITS)} (or none)")
        n = len(col["group"])
        count = col["n_constituents"].astype(np.int32)
        change = np.ones(n, bool)
        change[1:] = col["group"][1:] != col["group"][:-1]
        start = np.flatnonzero(change)
        if len(np.unique(col["group"][start])) != len(start):
            raise DatasetError(f"{path}: the jets of a group are not contiguous")
        for name, names in (("label", labels), ("variation", variations)):
            if n and not (col[name].min() >= 0 and col[name].max() < len(names)):
                raise DatasetError(f"{path}: jets/{name} holds codes beyond its names {names}")
        group_of_jet = np.cumsum(change) - 1
        key = group_of_jet * 256 + col["variation"].astype(np.int64)
        first = np.zeros(n, bool)
        first[np.unique(key, return_index=True)[1]] = True
        return {
            "labels": labels, "variations": variations, "start": start, "run_id": run_id,
            "split": SPLITS.index(split) if split else -1,
            "size": np.diff(np.append(start, n)).astype(np.int32),
            "event": col["event"][start], "id": col["group"][start],
            "label": col["label"][start].astype(np.int64),
            "variation": col["variation"].astype(np.int64), "count": count,
            "offset": offset, "first": first,
        }

    def _check_classes(self, classes: Mapping[str, Sequence[str]] | None
                       ) -> tuple[tuple[str, ...], np.ndarray]:
        """Class names, and the class index of every label (-1: in no class)."""
        if classes is None:
            return self.labels, np.arange(len(self.labels), dtype=np.int16)
        if not isinstance(classes, Mapping) or not classes:
            raise ValueError(f"classes must map class names to lists of label names, "
                             f"got {classes!r}")
        class_of = np.full(len(self.labels), -1, np.int16)
        for k, (name, members) in enumerate(classes.items()):
            members = [members] if isinstance(members, str) else list(members)
            if not members:
                raise ValueError(f"classes.{name}: no labels")
            for label in members:
                if label not in self.labels:
                    raise ValueError(f"classes.{name}: unknown label {label!r}; the data "
                                     f"have {', '.join(self.labels)}")
                i = self.labels.index(label)
                if class_of[i] >= 0:
                    raise ValueError(f"classes.{name}: label {label!r} is already in class "
                                     f"{list(classes)[class_of[i]]!r}")
                class_of[i] = k
        return tuple(classes), class_of

    def __repr__(self) -> str:
        return (f"<JetData {[str(p) for p in self.paths]}: {self.n_jets} jets, "
                f"{self.n_groups} groups, classes {list(self.classes)}>")

    @property
    def n_groups(self) -> int:
        return len(self.group_start)

    @property
    def n_jets(self) -> int:
        return int(self.file_start[-1])

    def jet_group(self, rows: np.ndarray) -> np.ndarray:
        """Dense group index of the jets ``rows``."""
        return np.searchsorted(self.group_start, rows, side="right") - 1

    def groups_in(self, split: str, fractions: Mapping[str, float] | None = None) -> np.ndarray:
        """Mask over groups: in ``split`` (or ``"all"``) and in some class.

        Groups of a file with a ``split`` attribute are in that split; the others are
        split by the hash of their hard event with ``fractions``.
        """
        mask = self.group_class >= 0
        if check_split(split) != "all":
            by_hash = split_of(self.group_event, fractions)
            which = np.where(self.group_split >= 0, self.group_split, by_hash)
            mask &= which == SPLITS.index(split)
        return mask

    def subset_key(self) -> np.ndarray:
        """A fixed number in [0, 1) per group: subsets take groups in increasing order."""
        return unit_hash(self.group_id, _SUBSET_SALT)

    # -- reading ------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"] = [None] * len(self.paths)
        state["_files"] = [None] * len(self.paths)
        return state

    def _columns(self, f: int) -> dict[str, h5py.Dataset]:
        if self._pid != os.getpid():  # a forked worker: never use the parent's handles
            self._handles = [None] * len(self.paths)
            self._files = [None] * len(self.paths)
            self._pid = os.getpid()
            self._read_since_open = 0
        if self._handles[f] is None:
            # open_data_set raises the open-file limit to cover every segment (HDF5 reads
            # zeros from segments it cannot open)
            h5 = open_data_set(self.paths[f], rdcc_nbytes=_CACHE_BYTES,
                               rdcc_nslots=_CACHE_SLOTS)
            self._files[f] = h5
            # (format-1 files lack the derived columns: made from the others when read)
            self._handles[f] = {c: h5["constituents"][c] for c in _READ
                                if c in h5["constituents"]}
        handles = self._handles[f]
        assert handles is not None  # opened above
        return handles

    def close(self) -> None:
        """Close the files (and free their chunk caches); the next read reopens them."""
        for h5 in self._files:
            if h5 is not None and self._pid == os.getpid():
                h5.close()
        self._handles = [None] * len(self.paths)
        self._files = [None] * len(self.paths)
        self._read_since_open = 0

    def particles(self, rows: np.ndarray, max_particles: int) -> Particles:
        """The hardest ``max_particles`` constituents of jets ``rows`` (any order, repeats
        allowed), padded. Reads a few contiguous ranges per file, not one per jet."""
        rows = np.asarray(rows, dtype=np.int64)
        unique, inverse = np.unique(rows, return_inverse=True)
        kept = np.minimum(self.jet_count[unique], max_particles).astype(np.int64)
        lo = self.jet_offset[unique]
        hi = lo + kept
        file = np.searchsorted(self.file_start, unique, side="right") - 1
        new = np.ones(len(unique), bool)
        new[1:] = (file[1:] != file[:-1]) | (lo[1:] - hi[:-1] > _READ_GAP)
        first = np.flatnonzero(new)
        last = np.append(first[1:], len(unique)) - 1
        range_lo, range_hi, range_file = lo[first], hi[last], file[first]
        size = range_hi - range_lo
        base = np.cumsum(size) - size
        which = np.cumsum(new) - 1
        position = base[which] + lo - range_lo[which]  # of each jet's first constituent

        parts: dict[str, list[np.ndarray]] = {c: [] for c in _READ}
        for f, a, b in zip(range_file.tolist(), range_lo.tolist(), range_hi.tolist(),
                           strict=True):
            columns = self._columns(f)
            read = {}
            for c, column in columns.items():
                try:
                    read[c] = column[a:b]
                except OSError as err:  # a damaged segment: say which
                    raise read_error(self._files[f], self.paths[f], "constituents", c, a, b,
                                     err) from None
            # older files: columns they lack
            read = with_derived("constituents", read, only=IMPACT_COLUMNS)
            for c in _READ:
                parts[c].append(read[c])
        self._read_since_open += int(size.sum())
        if self._read_since_open > _REOPEN_AFTER:
            self.close()
        take = ranges(position[inverse], kept[inverse])[0]
        flat = {c: (np.concatenate(p) if p else np.zeros(0))[take] for c, p in parts.items()}
        return Particles.from_flat(flat, kept[inverse], max_particles)


def _as_data(data: JetData | Paths, classes: Mapping[str, Sequence[str]] | None) -> JetData:
    if isinstance(data, JetData):
        if classes is not None:
            raise ValueError("classes: give them to JetData(paths, classes) when passing a "
                             "JetData")
        return data
    return JetData(data, classes)


def _cap(groups: np.ndarray, rows_per_group: np.ndarray, key: np.ndarray,
         max_jets: int | None) -> np.ndarray:
    """Groups (in their order) kept when taking them by increasing ``key`` while the rows
    stay within ``max_jets`` (all when None)."""
    if max_jets is None:
        return groups
    order = np.argsort(key[groups], kind="stable")
    fits = np.cumsum(rows_per_group[groups[order]]) <= max_jets
    if len(groups) and not fits.any():  # else blamed on the split, fraction or variations
        raise ValueError(f"max_jets = {max_jets} holds no whole group (subsets take whole "
                         f"groups in a fixed order; the first has "
                         f"{rows_per_group[groups[order[0]]]} jets)")
    return np.sort(groups[order[fits]])


def _world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """(rank, world size): given, or from torch.distributed when it is initialised."""
    dist = torch.distributed
    running = dist.is_available() and dist.is_initialized()
    if world_size is None:
        world_size = dist.get_world_size() if running else 1
    if rank is None:
        rank = dist.get_rank() if running else 0
    world_size = _check_int("world_size", world_size, 1)
    rank = _check_int("rank", rank, 0)
    if rank >= world_size:
        raise ValueError(f"rank must be < world_size = {world_size}, got {rank}")
    return rank, world_size


def _worker() -> tuple[int, int]:
    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


def _batch_dict(x: np.ndarray, v: np.ndarray, mask: np.ndarray, group: np.ndarray,
                label: np.ndarray, variation: np.ndarray) -> dict[str, torch.Tensor]:
    return {
        "x": torch.from_numpy(x), "v": torch.from_numpy(v), "mask": torch.from_numpy(mask),
        "group": torch.from_numpy(group.astype(np.int64)),
        "label": torch.from_numpy(label.astype(np.int64)),
        "variation": torch.from_numpy(variation.astype(np.int64)),
    }


class _Epochs(IterableDataset):
    """What both loaders share: epochs, resumption, rank and worker shares of batches."""

    data: JetData
    seed: int
    epoch: int
    start_batch: int
    rank: int
    world_size: int

    def _setup(self, seed: int, epoch: int, start_batch: int, rank: int | None,
               world_size: int | None, streaming: Streaming | None) -> None:
        self.seed = _check_int("seed", seed, 0)
        self.epoch = _check_int("epoch", epoch, 0)
        self.start_batch = _check_int("start_batch", start_batch, 0)
        self.rank, self.world_size = _world(rank, world_size)
        if streaming is not None and not isinstance(streaming, Streaming):
            raise ValueError(f"streaming must be a Streaming, got {streaming!r}")
        self.streaming = streaming or Streaming()

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Iterate over ``epoch`` next, from this rank's batch ``start_batch`` on."""
        self.epoch = _check_int("epoch", epoch, 0)
        self.start_batch = _check_int("start_batch", start_batch, 0)

    # subclasses: units (groups or jets) per epoch, batch size in units, remainder policy
    def _n_units(self) -> int:
        raise NotImplementedError

    def _batch_units(self) -> int:
        raise NotImplementedError

    def _remainder(self) -> str:
        raise NotImplementedError

    def _drop_last(self) -> bool:
        raise NotImplementedError

    def _shuffle(self) -> bool:
        raise NotImplementedError

    def n_batches(self) -> int:
        """Global batches per epoch (all ranks together, before padding)."""
        n, size = self._n_units(), self._batch_units()
        return n // size if self._drop_last() else -(-n // size)

    def batches(self) -> np.ndarray:
        """The global indices of this rank's batches of an epoch, in order."""
        return rank_batches(self.n_batches(), self.rank, self.world_size, self._remainder())

    def __len__(self) -> int:
        """Batches this rank yields in the current epoch (from ``start_batch`` on)."""
        return max(0, len(self.batches()) - self.start_batch)

    def order(self, epoch: int | None = None) -> np.ndarray:
        """The epoch's units in order (positions into the loader's unit list)."""
        epoch = self.epoch if epoch is None else epoch
        n = self._n_units()
        if not self._shuffle():
            return np.arange(n)
        rng = np.random.default_rng([self.seed, epoch, _PLAN_STREAM])
        return shuffled_order(n, rng, self.streaming)

    def _make(self, units: np.ndarray, batch: int, epoch: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        worker, workers = _worker()
        epoch = self.epoch
        order = self.order(epoch)
        mine = self.batches()
        size = self._batch_units()
        for i in range(self.start_batch + worker, len(mine), workers):
            b = int(mine[i])
            yield self._make(order[b * size:(b + 1) * size], b, epoch)


class PretrainBatches(_Epochs):
    """Pre-training batches: ``batch_groups`` groups x ``views`` jets, views adjacent.

    Arguments (all keywords but ``data``):

    * ``data``: a :class:`JetData`, or one or more resim file paths;
    * ``split``: ``train``, ``val``, ``test`` or ``all``; ``fractions``: the split sizes
      (mapping train/val/test -> fraction; default 0.8/0.1/0.1);
    * ``batch_groups``: groups per batch (rows = ``batch_groups * views``);
    * ``views``, ``mode``, ``variations``, ``source``, ``nominal``: the
      :class:`~resim.train.views.ViewPolicy`; ``augment``: a callable
      ``(Particles, numpy Generator) -> Particles`` applied to every view (required with
      ``source="augment"``, optional on top of re-simulated views);
    * ``max_particles``: padded constituents per jet (the hardest ones are kept);
    * ``feature_names``: the encoder's inputs, :data:`~resim.train.features.FEATURES`
      (default) or ``DETECTOR_FEATURES``;
    * ``max_jets``: at most this many jets (rows) per epoch, whole groups, a fixed subset;
      ``fraction``: only this fraction of the split's groups (nested, as LabelledJets');
    * ``seed``, ``epoch``, ``start_batch``: the plan and where to resume (this rank's
      batch index; :meth:`set_epoch` changes them between epochs);
    * ``shuffle``: False for a fixed group order (validation); ``drop_last``: drop the
      last, partial batch and the batches that do not divide among ranks (default: keep
      the partial batch, and pad ranks by wrapping around to the first batches);
    * ``rank``, ``world_size``: the DDP share (default: from torch.distributed, if
      initialised); ``classes``: the class mapping when ``data`` is paths;
      ``streaming``: read/shuffle granularity (:class:`Streaming`).

    ``skipped_groups`` counts the split's groups with too few eligible realizations.
    """

    def __init__(self, data: JetData | Paths, *, split: str = "train",
                 batch_groups: int = 100, views: int = 2, mode: str = "any",
                 variations: Sequence[str] | None = None, source: str = "resim",
                 nominal: str = "nominal", augment: Augment | None = None,
                 max_particles: int = 128, max_jets: int | None = None, seed: int = 0,
                 epoch: int = 0, start_batch: int = 0, shuffle: bool = True,
                 drop_last: bool = False, rank: int | None = None,
                 world_size: int | None = None, fractions: Mapping[str, float] | None = None,
                 classes: Mapping[str, Sequence[str]] | None = None,
                 streaming: Streaming | None = None, fraction: float = 1.0,
                 feature_names: Sequence[str] = FEATURES):
        self.feature_names = tuple(feature_names)
        self.policy = ViewPolicy(views=views, mode=mode, variations=variations, source=source,
                                 nominal=nominal)
        if augment is not None and not callable(augment):
            raise ValueError(f"augment must be a callable (Particles, Generator) -> "
                             f"Particles, got {augment!r}")
        if source == "augment" and augment is None:
            raise ValueError("augment: source 'augment' needs an augment callable")
        self.augment = augment
        self.batch_groups = _check_int("batch_groups", batch_groups, 1)
        self.max_particles = _check_int("max_particles", max_particles, 1)
        if max_jets is not None:
            _check_int("max_jets", max_jets, 1)
        self.shuffle, self.drop_last = bool(shuffle), bool(drop_last)
        self.split = check_split(split)
        self._setup(seed, epoch, start_batch, rank, world_size, streaming)
        self.data = _as_data(data, classes)
        self.eligible, self.anchor = self.policy.masks(
            self.data.variations, self.data.jet_variation, self.data.jet_first)

        d = self.data
        in_split = d.groups_in(self.split, fractions) & (d.subset_key() < fraction)
        if d.n_jets:
            n_eligible = np.add.reduceat(self.eligible.astype(np.int64), d.group_start)
            n_anchor = np.add.reduceat(self.anchor.astype(np.int64), d.group_start)
            usable = self.policy.usable(n_eligible, n_anchor)
        else:
            usable = np.zeros(0, bool)
        self.skipped_groups = int((in_split & ~usable).sum())
        groups = np.flatnonzero(in_split & usable)
        rows = np.full(d.n_groups, self.policy.views)
        self.groups = _cap(groups, rows, d.subset_key(), max_jets)
        if not len(self.groups):
            raise ValueError(
                f"split {self.split!r} of {[str(p) for p in d.paths]} has no group with "
                f"{self.policy.views} eligible realizations ({self.skipped_groups} skipped; "
                f"data.views: {self.policy})")

    def _n_units(self) -> int:
        return len(self.groups)

    def _batch_units(self) -> int:
        return self.batch_groups

    def _remainder(self) -> str:
        return "drop" if self.drop_last else "pad"

    def _drop_last(self) -> bool:
        return self.drop_last

    def _shuffle(self) -> bool:
        return self.shuffle

    def batch_rows(self, i: int, epoch: int | None = None) -> np.ndarray:
        """Jet rows (n_groups, views) of this rank's batch ``i``, without reading anything."""
        epoch = self.epoch if epoch is None else epoch
        b = int(self.batches()[i])
        units = self.order(epoch)[b * self.batch_groups:(b + 1) * self.batch_groups]
        return self._rows(units, b, epoch)[0]

    def _rows(self, units: np.ndarray, batch: int, epoch: int
              ) -> tuple[np.ndarray, np.random.Generator]:
        rng = np.random.default_rng([self.seed, epoch, batch, _BATCH_STREAM])
        g = self.groups[units]
        rows = choose_views(self.policy, self.data.group_start[g], self.data.group_size[g],
                            self.eligible, self.anchor, rng)
        return rows, rng

    def _make(self, units: np.ndarray, batch: int, epoch: int) -> dict[str, torch.Tensor]:
        rows, rng = self._rows(units, batch, epoch)
        rows = rows.reshape(-1)
        p = self.data.particles(rows, self.max_particles)
        if self.augment is not None:
            p = self.augment(p, rng)
        x, v = features(p, self.feature_names)
        d = self.data
        group = d.jet_group(rows)
        return _batch_dict(x, v, p.mask, group, d.group_class[group], d.jet_variation[rows])


class LabelledJets(_Epochs):
    """Labelled jets, one per row, for fine-tuning (``shuffle=True``) and evaluation.

    Arguments (all keywords but ``data``), besides those of :class:`PretrainBatches`
    (``split``, ``fractions``, ``max_particles``, ``max_jets``, ``seed``, ``epoch``,
    ``start_batch``, ``rank``, ``world_size``, ``classes``, ``streaming``,
    ``feature_names``):

    * ``variations``: ``"nominal"`` (default), ``"all"``, or a list of variation names:
      the jets of these variations are the rows (every realization of each);
    * ``fraction``: the labelled fraction in (0, 1]: a fixed subset of groups, nested
      (the groups of fraction 0.01 are among those of 0.1);
    * ``batch_size``: rows per batch; ``shuffle``: a new chunk-friendly order each epoch
      (training) or file order (evaluation, the default);
    * ``drop_last``: default ``shuffle``. Then the last partial batch and the batches that
      do not divide among ranks are dropped; without it, evaluation order gives every jet
      exactly once (under DDP a rank may then have one batch more), and shuffled
      training pads ranks by wrapping around;
    * ``transform``: a deterministic ``Particles -> Particles`` applied before the
      features (the encoder's input frame, ``resim.train.frames``).
    """

    def __init__(self, data: JetData | Paths, *, split: str = "test",
                 variations: str | Sequence[str] = "nominal", fraction: float = 1.0,
                 batch_size: int = 1000, max_particles: int = 128, max_jets: int | None = None,
                 shuffle: bool = False, drop_last: bool | None = None, seed: int = 0,
                 epoch: int = 0, start_batch: int = 0, rank: int | None = None,
                 world_size: int | None = None, fractions: Mapping[str, float] | None = None,
                 classes: Mapping[str, Sequence[str]] | None = None,
                 streaming: Streaming | None = None,
                 feature_names: Sequence[str] = FEATURES,
                 transform: Callable[[Particles], Particles] | None = None):
        self.feature_names = tuple(feature_names)
        self.transform = transform
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.max_particles = _check_int("max_particles", max_particles, 1)
        if max_jets is not None:
            _check_int("max_jets", max_jets, 1)
        if isinstance(fraction, bool) or not isinstance(fraction, int | float) \
                or not 0 < fraction <= 1:
            raise ValueError(f"fraction must be a number in (0, 1], got {fraction!r}")
        self.fraction = float(fraction)
        self.shuffle = bool(shuffle)
        self.drop_last = self.shuffle if drop_last is None else bool(drop_last)
        self.split = check_split(split)
        self._setup(seed, epoch, start_batch, rank, world_size, streaming)
        self.data = d = _as_data(data, classes)
        self.variation_names = self._check_variations(variations)

        key = d.subset_key()
        in_set = d.groups_in(self.split, fractions) & (key < self.fraction)
        wanted = np.isin(d.jet_variation,
                         [d.variations.index(v) for v in self.variation_names])
        group_of_jet = np.repeat(np.arange(d.n_groups), d.group_size)
        rows_per_group = np.bincount(group_of_jet[wanted], minlength=d.n_groups)
        groups = _cap(np.flatnonzero(in_set & (rows_per_group > 0)), rows_per_group, key,
                      max_jets)
        keep = np.zeros(d.n_groups, bool)
        keep[groups] = True
        self.rows = np.flatnonzero(wanted & keep[group_of_jet])
        if not len(self.rows):
            raise ValueError(f"split {self.split!r} with fraction {self.fraction} and "
                             f"variations {list(self.variation_names)} selects no jets of "
                             f"{[str(p) for p in d.paths]}")

    def _check_variations(self, variations: str | Sequence[str]) -> tuple[str, ...]:
        names = self.data.variations
        if variations == "all":
            return names
        chosen = [variations] if isinstance(variations, str) else list(variations)
        if "all" in chosen and "all" not in names:
            raise ValueError(f"variations: 'all' stands alone, not in a list of names "
                             f"({', '.join(chosen)})")
        unknown = [v for v in chosen if v not in names]
        if not chosen or unknown:
            raise ValueError(f"variations: {unknown or chosen!r} not in the data (it has "
                             f"{', '.join(names)}; or use 'all')")
        return tuple(chosen)

    @property
    def n_jets(self) -> int:
        return len(self.rows)

    def _n_units(self) -> int:
        return len(self.rows)

    def _batch_units(self) -> int:
        return self.batch_size

    def _remainder(self) -> str:
        if self.drop_last:
            return "drop"
        return "pad" if self.shuffle else "keep"

    def _drop_last(self) -> bool:
        return self.drop_last

    def _shuffle(self) -> bool:
        return self.shuffle

    def batch_rows(self, i: int, epoch: int | None = None) -> np.ndarray:
        """Jet rows of this rank's batch ``i``, without reading anything."""
        b = int(self.batches()[i])
        return self.rows[self.order(epoch)[b * self.batch_size:(b + 1) * self.batch_size]]

    def _make(self, units: np.ndarray, batch: int, epoch: int) -> dict[str, torch.Tensor]:
        rows = self.rows[units]
        p = self.data.particles(rows, self.max_particles)
        if self.transform is not None:
            p = self.transform(p)
        x, v = features(p, self.feature_names)
        d = self.data
        group = d.jet_group(rows)
        return _batch_dict(x, v, p.mask, group, d.group_class[group], d.jet_variation[rows])


def make_loader(dataset: PretrainBatches | LabelledJets, num_workers: int = 0,
                prefetch_factor: int = 2, pin_memory: bool = False) -> DataLoader:
    """A DataLoader over ``dataset``'s ready-made batches (``batch_size=None``).

    Workers are not persistent, so :meth:`set_epoch` before ``iter(loader)`` reaches
    them; the batches are the same for any ``num_workers``. The loader has its own
    ``torch.Generator``: a DataLoader without one draws its workers' base seed from the
    global torch RNG at every ``iter()``, which would shift the training's dropout masks
    by whether (and how often) a loader was iterated, and break exact resumption. (The
    batches themselves never use torch's RNG: their choices come from (seed, epoch, batch).)
    """
    num_workers = _check_int("num_workers", num_workers, 0)
    return DataLoader(dataset, batch_size=None, num_workers=num_workers,
                      prefetch_factor=prefetch_factor if num_workers else None,
                      pin_memory=pin_memory, persistent_workers=False,
                      generator=torch.Generator())

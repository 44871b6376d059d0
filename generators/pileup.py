"""Pileup: minimum-bias collisions overlaid on a realization's particles, for the detector.

**The library.** A separate Pythia (``SoftQCD:inelastic``, the card's beams and ``[pythia]``
settings, i.e. its tune) makes ``[pileup.library] events`` minimum-bias events once per
run, as Delphes reads its ``MinBias.pileup`` file. The library is made in chunks of
:data:`CHUNK_EVENTS`, chunk ``c`` from the seed derived from (card seed, ``"pileup
library"``, ``c``): a pure function of the card, the same on every rank, whichever rank
makes which chunk (MPI ranks share the work) and on every resume. A run keeps it in
``OUTPUT.parts/pileup-library.h5`` (:func:`shared_library`); ``Pipeline(card).block``
alone makes it again, identically. Making a minimum-bias event costs Pythia ~2 ms, 50
of them per realization ~12 times a full re-simulation (``benchmarks/pileup_cost.py``):
the library is what makes pileup affordable.

**The overlay** (:func:`overlay`, after Delphes' PileUpMerger): a realization with key
``k`` overlays n ~ Poisson(μ) collisions, collision c being library event
⌊u·L⌋, rotated by a uniform azimuth and made at z_c along the beam. Collision vertices,
the hard one's included, are spread by a Gaussian of the luminous region's width; the
detector works in the frame of the hard collision (the primary vertex), so pileup vertex
c sits at z_c − z_PV (dz is measured from the primary vertex, as experiments quote it;
shifting the acceptance by z_PV ~ 5 cm against a 3 m tracker is neglected). Every number
is counter-based (:mod:`.seeds`): the overlay of a realization depends on nothing but
its key. Pileup rows follow the signal's in each realization, so the signal's detector
random numbers (counted by row) do not change when pileup is added; the ``pileup``
column (1 for pileup particles) travels with them to the candidates.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from resim.card import Card, PythiaSetting
from resim.parallel import Comm
from resim.pileup_spec import LibrarySpec, PileupSpec
from resim.store import WriteError, hdf5_to_write, writing

from .final_state import COLUMNS, FinalState, ParticleTable, visible_final_state
from .pythia_setup import QUIET, configure, initialize, new_pythia, pythia_version
from .seeds import derive_seed, normal, uniform

#: Minimum-bias events per library chunk (one ``nextBatch`` call, one derived seed).
CHUNK_EVENTS = 500
#: Library particles beyond this |η| are dropped: no calorimeter reaches there (CMS's
#: forward calorimeter ends at |η| = 5).
ABS_ETA_MAX = 6.0
#: The library's columns and their stored types.
LIBRARY_TYPES = {"px": np.float32, "py": np.float32, "pz": np.float32, "E": np.float32,
                 "pid": np.int32, "charge": np.int8, "vx": np.float32, "vy": np.float32,
                 "vz": np.float32}
LIBRARY_FILE = "pileup-library.h5"

# Random-number streams of the overlay.
_COUNT, _EVENT, _Z, _PHI = range(4)


class MinimumBias:
    """The Pythia instance that makes the library, configured (and so checked) at once,
    initialised only when a chunk is asked for (~5 s: its MPI tables)."""

    def __init__(self, card: Card, beams: tuple[int, int, float, float]):
        if card.pileup is None:
            raise ValueError("the card has no [pileup] section")
        self.card = card
        id_a, id_b, e_a, e_b = beams
        beam_lines = (f"Beams:idA = {id_a}", f"Beams:idB = {id_b}", "Beams:frameType = 2",
                      f"Beams:eA = {e_a!r}", f"Beams:eB = {e_b!r}")
        # Not the card's [decays]: forcing a hard process's decays would bias pileup.
        self.settings = (*(PythiaSetting("", line) for line in (*QUIET, *beam_lines)),
                         *card.pythia, *card.pileup.library.settings)
        self.pythia = new_pythia()
        configure(self.pythia, self.settings, card.path)
        self._table: ParticleTable | None = None  # set once initialised

    @property
    def _spec(self) -> LibrarySpec:
        assert self.card.pileup is not None  # checked when made
        return self.card.pileup.library

    @property
    def n_chunks(self) -> int:
        return math.ceil(self._spec.events / CHUNK_EVENTS)

    def library_fingerprint(self) -> str:
        """What the library is a function of (its file is reused only if it matches)."""
        text = json.dumps([self.card.run.seed, self._spec.events, CHUNK_EVENTS,
                           ABS_ETA_MAX, [s.line for s in self.settings], pythia_version()])
        return hashlib.sha256(text.encode()).hexdigest()

    def events(self, n: int, seed: int) -> FinalState:
        """``n`` minimum-bias events (fewer if Pythia fails some) from ``seed``: their
        visible particles."""
        if self._table is None:
            initialize(self.pythia, self.card.path, "pileup.library",
                       "minimum-bias Pythia of the pileup library")
            self._table = ParticleTable(self.pythia.particleData)
        self.pythia.rndm.init(seed)
        return visible_final_state(self.pythia.nextBatch(n, "none"), self._table)

    def chunk(self, index: int) -> FinalState:
        """Library chunk ``index``: visible particles (|η| < ABS_ETA_MAX) of its events."""
        n = min(CHUNK_EVENTS, self._spec.events - index * CHUNK_EVENTS)
        events = self.events(n, derive_seed(self.card.run.seed, "pileup library", index))
        c = events.columns
        pt = np.hypot(c["px"], c["py"])
        keep = np.abs(np.arcsinh(c["pz"] / np.maximum(pt, 1e-12))) < ABS_ETA_MAX
        kept = events.where(keep)
        return FinalState({k: v.astype(LIBRARY_TYPES[k]) for k, v in kept.columns.items()},
                          kept.offsets)


def make_library(maker: MinimumBias, comm: Comm | None = None,
                 stop: Callable[[], bool] | None = None) -> FinalState | None:
    """Every chunk of the library, in order; with ``comm`` (MPI), ranks share the chunks
    and every rank gets all of them. ``stop`` is asked before each chunk: once it says
    so, this rank makes no more, and no rank gets a library (None)."""
    rank, size = (comm.Get_rank(), comm.Get_size()) if comm is not None else (0, 1)
    mine: dict[int, FinalState] = {}
    for c in range(rank, maker.n_chunks, size):
        if stop is not None and stop():
            break
        mine[c] = maker.chunk(c)
    chunks: dict[int, FinalState] = {}
    for part in (comm.allgather(mine) if comm is not None else [mine]):
        chunks.update(part)
    if len(chunks) < maker.n_chunks:
        return None
    return FinalState.concatenate([chunks[c] for c in range(maker.n_chunks)])


def shared_library(maker: MinimumBias, path: Path, comm: Comm,
                   stop: Callable[[], bool] | None = None) -> FinalState | None:
    """The run's library: read from ``path`` if a run of the same card made it, else made
    (ranks sharing the work; None if ``stop`` stopped it) and written there by rank 0."""
    rank = comm.Get_rank()
    fingerprint = maker.library_fingerprint()
    usable = comm.bcast(_fingerprint_of(path) == fingerprint if rank == 0 else None)
    if usable:
        return read_library(path)
    library = make_library(maker, comm, stop)
    if rank == 0 and library is not None:
        write_library(library, path, fingerprint)
    return library


def _fingerprint_of(path: Path) -> str | None:
    try:
        with h5py.File(path, "r") as f:
            return str(f.attrs["fingerprint"])
    except (OSError, KeyError):
        return None


def write_library(library: FinalState, path: Path, fingerprint: str) -> None:
    """Write atomically (a temporary file renamed): a crash leaves no half library. A full
    disk is a :class:`~resim.store.WriteError` naming the file, met before HDF5 writes."""
    tmp = path.with_suffix(".writing")
    raw = sum(v.nbytes for v in library.columns.values()) + library.offsets.nbytes
    try:
        with hdf5_to_write(tmp) as f, writing(f, tmp, raw + raw // 50 + (1 << 20)):
            for name, values in library.columns.items():
                f.create_dataset(name, data=values, compression="gzip", compression_opts=1,
                                 fletcher32=True)
            f.create_dataset("offsets", data=library.offsets)
            f.attrs["fingerprint"] = fingerprint
        os.replace(tmp, path)
    except OSError as err:
        raise WriteError(f"cannot write the pileup library {path}: "
                         f"{err.strerror or err}") from None


def read_library(path: Path) -> FinalState:
    with h5py.File(path, "r") as f:
        return FinalState({name: f[name][:] for name in COLUMNS}, f["offsets"][:])


# ---------------------------------------------------------------------------- overlay


@dataclass
class Overlay:
    """Realizations with their pileup: ``particles`` (signal rows, then pileup rows, of
    each realization; column ``pileup`` 1 for pileup particles), the number of pileup
    collisions of each realization, and their vertices' z (mm, from the primary vertex),
    ``n_pileup[i]`` of them per realization in order."""

    particles: FinalState
    n_pileup: np.ndarray
    vertex_z: np.ndarray


@functools.cache
def _poisson_cdf(mu: float) -> np.ndarray:
    """P(N <= k) for k = 0 ... far beyond any draw."""
    k = np.arange(int(mu + 20 * math.sqrt(mu) + 40))
    log_pmf = k * math.log(mu) - mu - np.array([math.lgamma(i + 1.0) for i in k])
    return np.cumsum(np.exp(log_pmf))


def poisson(u: np.ndarray, mu: float) -> np.ndarray:
    """Poisson numbers of mean ``mu`` from uniform ``u`` (inverse of the CDF)."""
    if mu == 0:
        return np.zeros(len(u), np.int64)
    cdf = _poisson_cdf(float(mu))
    return np.minimum(np.searchsorted(cdf, u), len(cdf) - 1).astype(np.int64)


def overlay(signal: FinalState, library: FinalState, keys: np.ndarray,
            spec: PileupSpec) -> Overlay:
    """Each realization of ``signal`` with its own pileup, drawn with ``keys[i]``."""
    keys = np.asarray(keys, np.uint64)
    n_real = len(signal)
    n = poisson(uniform(keys, _COUNT, np.zeros(n_real, np.int64)), spec.mu)
    owner = np.repeat(np.arange(n_real), n)  # realization of each collision
    c = np.arange(len(owner)) - np.repeat(np.cumsum(n) - n, n)  # its index there
    k = keys[owner]
    event = (uniform(k, _EVENT, c) * len(library)).astype(np.int64)
    sigma = spec.z_width
    z = sigma * (normal(k, _Z, c + 1) - normal(keys, _Z, np.zeros(n_real, np.int64))[owner])
    phi = 2 * np.pi * uniform(k, _PHI, c)

    pile = library.take(event)
    collision = pile.event_index()
    cos, sin = np.cos(phi)[collision], np.sin(phi)[collision]
    p = pile.columns
    rotated = {
        "px": cos * p["px"] - sin * p["py"], "py": sin * p["px"] + cos * p["py"],
        "vx": cos * p["vx"] - sin * p["vy"], "vy": sin * p["vx"] + cos * p["vy"],
        "vz": p["vz"] + z[collision],
    }
    rows = np.bincount(owner, weights=pile.counts, minlength=n_real).astype(np.int64)
    counts = signal.counts + rows
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    # Signal rows first in each realization, then its pileup rows.
    at_signal = np.arange(signal.offsets[-1]) + np.repeat(offsets[:-1] - signal.offsets[:-1],
                                                           signal.counts)
    row_owner = owner[collision]
    pile_start = np.concatenate([[0], np.cumsum(rows)])
    at_pile = (np.arange(len(row_owner)) - pile_start[row_owner]
               + offsets[row_owner] + signal.counts[row_owner])
    columns = {}
    for name in (*COLUMNS, "pileup"):
        values = signal.columns.get(name, np.zeros(signal.offsets[-1], np.int8))
        extra = rotated.get(name, p.get(name, np.ones(len(row_owner), np.int8)))
        out = np.empty(offsets[-1], np.result_type(values, extra))
        out[at_signal] = values
        out[at_pile] = extra
        columns[name] = out
    return Overlay(FinalState(columns, offsets), n, z)


__all__ = ["CHUNK_EVENTS", "LIBRARY_FILE", "MinimumBias", "Overlay", "make_library", "overlay",
           "poisson", "read_library", "shared_library", "write_library"]

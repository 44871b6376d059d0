"""HepMC3 output of realizations: the event record every detector simulation reads.

With ``[run] hepmc = true`` every realization Pythia makes — its full event record, not
only the jets' particles — is also written as a HepMC3 event (Asciiv3, gzip-compressed),
so users can run Delphes or their experiment's full simulation on exactly the
realizations of the data set. Realizations of ``stage = "detector"`` variations are not
written: their particles are those of their base variation's first realization.

A block of hard events goes to ``OUTPUT.parts/hepmc/events-<first>-<last>.hepmc3.gz``,
written under a temporary name and renamed when the block is complete. A block that is
made again (a resumed run re-makes what was not committed, in blocks of its own) first
removes the files its hard events were in: they are made again bit for bit. Each event
has the hard event's index as its number, the hard process's weight, and the attributes
``resim.variation``, ``resim.realization``, ``resim.attempt`` and ``resim.seed`` (the
Pythia seed that made it).

The record is Pythia's without its entry 0 (the "system"), with production vertices
(mm, mm/c). Its graph follows Pythia's mothers (:func:`mother_pairs`): hadrons from a
string have every parton of its range as mother, other particles their first mother;
particles with a mother in common share one vertex (as Pythia's own HepMC interface
merges them), whose position is its first particle's production point. Status codes are Pythia's
``statusHepMC``: 1 final, 2 decayed hadron, μ or τ, 4 beam, other documentation entries
their Pythia status as a positive number.

The text is written here rather than by pyhepmc's writer: HepMC3's reader (3.2, which
pyhepmc bundles) needs every particle after its mothers, which Pythia's record is not
(initial-state showers append mothers after their daughters), and the particles are
therefore written in an order of generations (mothers first, otherwise the record's).
The files read back with pyhepmc, which the tests do.
"""

from __future__ import annotations

import gzip
import os
import re
from pathlib import Path
from typing import TextIO

import awkward as ak
import numpy as np

from .final_state import _event_ranges, _numpy, _vertices
from .handoff import Job

#: gzip level: files ~2.6 times smaller than the text at a fraction of level 9's time.
COMPRESSION = 1
VERSION = "HepMC::Version 3.02.05"
_NAME = re.compile(r"^events-(\d+)-(\d+)\.hepmc3\.gz$")


def hepmc_status(status: np.ndarray, pid: np.ndarray) -> np.ndarray:
    """Pythia's ``Particle::statusHepMC`` for arrays of Pythia status codes and ids."""
    apid = np.abs(pid)
    diquark = (apid > 1000) & (apid < 10000) & ((apid // 10) % 10 == 0)
    hadron = (apid > 100) & (apid < 1_000_000) & ~diquark
    out = np.where((status <= -11) & (status >= -200), -status, 0)
    out = np.where(hadron | (apid == 13) | (apid == 15), np.where(status < 0, 2, out), out)
    out = np.where(status == -12, 4, out)
    return np.where(status > 0, 1, out).astype(np.int64)


def mother_pairs(mother1: np.ndarray, mother2: np.ndarray,
                 status: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(child, mother) pairs of a Pythia record given without its entry 0 (zero-based
    positions): every parton of the range mother1..mother2 for hadrons from strings
    (|status| 81-86) and R-hadrons (101-106), as Pythia's ``motherList``; else mother1.
    (A second mother — the recoiler of a Vincia branching, say — would tie vertices of
    different generations into cycles when mothers in common merge vertices.)"""
    s = np.abs(status)
    string = ((s >= 81) & (s <= 86)) | ((s >= 101) & (s <= 106))
    ranged = string & (mother2 > mother1) & (mother1 > 0)
    n = np.where(ranged, mother2 - mother1 + 1, (mother1 > 0).astype(np.int64))
    child = np.repeat(np.arange(len(mother1)), n)
    step = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
    mother = np.where(ranged[child], mother1[child] + step,
                      np.where(step == 0, mother1[child], mother2[child]))
    return child, mother - 1


def event_text(number: int, weight: float, attributes: dict[str, object],
               c: dict[str, np.ndarray]) -> str:
    """One event in HepMC3's Asciiv3 format, from a Pythia record without its entry 0
    (columns ``id, status, mother1, mother2, px, py, pz, e, m, vx, vy, vz, vt``)."""
    n = len(c["id"])
    child, mother = mother_pairs(c["mother1"], c["mother2"], c["status"])
    # Vertices: children that share a mother are one vertex (labels spread until every
    # child's label is the least of those it shares mothers with).
    label = np.arange(n)
    while True:
        of_mother = np.full(n, n)
        np.minimum.at(of_mother, mother, label[child])
        new = label.copy()
        np.minimum.at(new, child, of_mother[mother])
        if np.array_equal(new, label):
            break
        label = new
    made = np.zeros(n, bool)
    made[child] = True
    vertex = np.full(n, -1)  # production vertex of each particle
    ends = np.full(n, -1)  # end vertex
    roots, vertex[made] = np.unique(label[made], return_inverse=True)
    ends[mother] = vertex[child]
    # Generations: a particle comes after every incoming particle of its vertex.
    depth = np.zeros(n, np.int64)
    mothers = np.flatnonzero(ends >= 0)
    for _ in range(n + 1):
        reach = np.zeros(len(roots), np.int64)
        np.maximum.at(reach, ends[mothers], depth[mothers] + 1)
        new = np.where(made, reach[np.maximum(vertex, 0)], 0)
        if np.array_equal(new, depth):
            break
        depth = new
    else:
        raise ValueError(f"event {number}: its mother relations form a cycle")
    order = np.lexsort((np.arange(n), depth))
    position = np.empty(n, np.int64)
    position[order] = np.arange(1, n + 1)  # HepMC particle ids

    # A vertex is written (as ``V``) if it has several incoming particles or a position;
    # else a particle names its one mother. HepMC numbers vertices -1, -2, ... in the order
    # of their first particle.
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)  # where each particle is written
    first = np.full(len(roots), n)
    np.minimum.at(first, vertex[made], rank[made])  # rank of each vertex's first particle
    v_id = np.empty(len(roots), np.int64)
    v_id[np.argsort(first)] = -np.arange(1, len(roots) + 1)
    incoming = mothers[np.lexsort((position[mothers], ends[mothers]))]  # by vertex, then id
    n_in = np.bincount(ends[incoming], minlength=len(roots))
    start_in = np.cumsum(n_in) - n_in
    in_ids = position[incoming]
    at = np.stack([c["vx"], c["vy"], c["vz"], c["vt"]], axis=1)[order[first]]
    placed = at.any(axis=1)
    explicit = (n_in > 1) | placed
    v = np.maximum(vertex[order], 0)
    reference = np.where(vertex[order] >= 0,
                         np.where(explicit[v], v_id[v], in_ids[start_in[v]]), 0)

    status = hepmc_status(c["status"], c["id"])[order]
    columns = [position[order], reference, c["id"][order], status]
    p_lines = [f"P {i} {r} {pid} {px!r} {py!r} {pz!r} {e!r} {m!r} {s}"
               for i, r, pid, s, px, py, pz, e, m in zip(
                   *(x.tolist() for x in columns),
                   *(c[k][order].tolist() for k in ("px", "py", "pz", "e", "m")), strict=True)]
    shown = np.flatnonzero(explicit)
    v_lines = []
    for k, s, m, xyzt, has_position in zip(v_id[shown].tolist(), start_in[shown].tolist(),
                                           n_in[shown].tolist(), at[shown].tolist(),
                                           placed[shown].tolist(), strict=True):
        where = (" @ " + " ".join(map(repr, xyzt))) if has_position else ""
        v_lines.append(f"V {k} 0 [{','.join(map(str, in_ids[s:s + m].tolist()))}]{where}")
    # each V line just before its first particle
    slot = np.argsort(np.concatenate([2 * first[shown], 2 * np.arange(n) + 1]), kind="stable")
    body = v_lines + p_lines
    lines = [f"E {number} {len(roots)} {n}", "U GEV MM", f"W {weight!r}"]
    lines += [f"A 0 {k} {val}" for k, val in sorted(attributes.items())]
    lines += [body[i] for i in slot.tolist()]
    return "\n".join(lines) + "\n"


class HepMCWriter:
    """Writes the realizations of blocks of hard events, one file per block."""

    def __init__(self, directory: Path, tools: dict[str, str]):
        self.directory = Path(directory)  # made by the first block: the run owns OUTPUT.parts
        self.header = "\n".join([VERSION, "HepMC::Asciiv3-START_EVENT_LISTING", "W default",
                                 *(f"T {name}\\|{version}\\|" for name, version in
                                   tools.items())]) + "\n"
        self._file: TextIO | None = None
        self._path: Path | None = None

    def begin(self, first: int, last: int) -> None:
        """Start the file of hard events [first, last), removing files of earlier blocks
        that held any of them (and what a block cut short left)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for path in self.directory.iterdir():
            m = _NAME.match(path.name)
            if path.name.endswith(".tmp") or (m and int(m[1]) < last and int(m[2]) > first):
                path.unlink(missing_ok=True)
        self._path = self.directory / f"events-{first:010d}-{last:010d}.hepmc3.gz"
        self._file = gzip.open(  # noqa: SIM115 (kept open for the block; closed by end())
            self._path.with_name(self._path.name + ".tmp"), "wt", compresslevel=COMPRESSION,
            encoding="ascii")
        self._file.write(self.header)

    def write(self, batch: ak.Array, jobs: list[Job], variations: tuple[str, ...],
              weights: dict[int, float]) -> None:
        """The events of one ``nextBatch`` array (its successful events are ``jobs``)."""
        assert self._file is not None, "begin() opens the block's file"
        prt, starts, stops = _event_ranges(batch)
        p = prt.content("p")
        for job, start, stop in zip(jobs, starts.tolist(), stops.tolist(), strict=True):
            take = np.arange(start + 1, stop)  # without Pythia's entry 0
            c = {name: _numpy(prt.content(name))[take] for name in
                 ("id", "status", "mother1", "mother2", "m")}
            c.update({name: _numpy(p.content(name))[take] for name in ("px", "py", "pz", "e")})
            c.update(_vertices(prt.content("vProd"), take,
                               {"vx": "px", "vy": "py", "vz": "pz", "vt": "e"}))
            self._file.write(event_text(job.event, weights.get(job.event, 1.0), {
                "resim.attempt": job.attempt, "resim.realization": job.realization,
                "resim.seed": job.seed, "resim.variation": variations[job.variation]}, c))

    def end(self) -> None:
        """Finish the block's file and give it its name."""
        if self._file is None or self._path is None:
            return
        self._file.write("HepMC::Asciiv3-END_EVENT_LISTING\n")
        self._file.close()
        os.replace(self._path.with_name(self._path.name + ".tmp"), self._path)
        self._file = None


def files(directory: Path) -> list[Path]:
    """A run's HepMC3 files, in hard-event order."""
    found = [(int(m[1]), p) for p in Path(directory).glob("events-*.hepmc3.gz")
             if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]

"""What happens to one block of hard events: the hard process, its re-simulation by every
variation, the detector and pileup, the jets, and the block's output tables.

:class:`Pipeline` holds every Pythia instance of a card, set up (and so checked) once;
``Pipeline.block(first, last)`` makes hard events ``[first, last)`` into rows of the
output's tables. The run around it (output, resume, MPI shares, commits, progress) is
:mod:`resim.generate`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import awkward as ak
import numpy as np

from . import __version__
from .card import Card
from .generators.detector import Detector
from .generators.final_state import FinalState, ParticleTable, visible_final_state
from .generators.handoff import Job
from .generators.hard_process import HardProcessSource
from .generators.hepmc import HepMCWriter
from .generators.mitigation import mitigate
from .generators.pileup import MinimumBias, make_library, overlay
from .generators.pythia_setup import pythia_version
from .generators.resimulate import Resimulator, job_table
from .generators.seeds import derive_keys
from .jets import make_jets
from .layout import as_table, empty_tables
from .store import parts_dir
from .timing import StepTimer
from .truth import TruthObjects

#: The detector (with pileup, the overlay and the mitigation too) takes the realizations of
#: a block this many particles at a time: its ~300 array operations then stay within the
#: CPU's caches and reuse memory instead of faulting in fresh pages (with <mu> = 50 pileup,
#: ~8,000 particles per realization, 30 % faster than a whole block at once). Output does
#: not depend on it: each realization's response is a function of its own key.
DETECTOR_PARTICLES_AT_ONCE = 80_000


class InterruptedBlockError(Exception):
    """A stop was asked for while a block was being made: the block is dropped."""


@dataclass
class BlockStats:
    """What a block made, for the progress bar."""

    events: int = 0
    realizations: int = 0
    jets: int = 0
    failed: int = 0


class Pipeline:
    """Every Pythia instance of a card, set up (and so checked) once, and the per-block work."""

    def __init__(self, card: Card):
        cpu = time.process_time()
        self.card = card
        self.source = HardProcessSource(card)
        self.resimulator = Resimulator(card, self.source.beams())
        self.particles = ParticleTable(self.source.pythia.particleData)
        #: One detector per distinct set of parameters among the variations.
        self.detectors = {v.detector: Detector(v.detector) for v in card.variations
                          if v.detector is not None}
        #: What each variation's realizations go through: (detector, pileup) pairs, and
        #: each variation's position among them (-1: no detector). By position: comparing
        #: two specs compares every number in them.
        setups = list(dict.fromkeys((v.detector, v.pileup) for v in card.variations
                                    if v.detector is not None))
        self._setups = [(self.detectors[d], p) for d, p in setups]
        self._setup_of = np.array([setups.index((v.detector, v.pileup))
                                   if v.detector is not None else -1
                                   for v in card.variations], np.int64)
        #: With ``[pileup]``: the Pythia of the minimum-bias library (checked now, run
        #: when the library is first needed) and the library.
        self.minimum_bias = (MinimumBias(card, self.source.beams()) if card.pileup
                             else None)
        self._library: FinalState | None = None
        #: Visible particles are read down to the softest the jets or a detector take.
        self.read_pt_min = min([card.jets.constituent_pt_min] + [
            d.geometry.particle_pt_min for d in self.detectors])
        #: With ``[run] hepmc``: every realization's event record, as HepMC3.
        self.hepmc = (HepMCWriter(parts_dir(card.run.output) / "hepmc", {
            "resim": __version__, "Pythia": pythia_version()}) if card.run.hepmc else None)
        self._weights: dict[int, float] = {}
        #: CPU seconds spent setting up (initialising every Pythia instance).
        self.setup_cpu_seconds = time.process_time() - cpu
        #: Seconds spent in each step so far (for benchmarks and the curious); the run
        #: times its writing here too.
        self.timings: dict[str, float] = dict.fromkeys(
            ("hard process", "re-simulation", "truth", "final state", "hepmc", "pileup",
             "detector", "mitigation", "jets", "writing"), 0.0)
        self.timer = StepTimer(self.timings)
        #: Asked between Pythia's batches: True drops the block in progress
        #: (:class:`InterruptedBlockError`), to stop within about a second of a signal.
        self.interrupt: Callable[[], bool] = lambda: False

    def _final_state(self, events: ak.Array, jobs: list[Job]) -> FinalState:
        """Visible final state of a batch of realizations, read as soon as it is made."""
        if self.interrupt():
            raise InterruptedBlockError
        with self.timer.step("final state"):
            particles = visible_final_state(events, self.particles, self.read_pt_min)
        if self.hepmc is not None:
            with self.timer.step("hepmc"):
                self.hepmc.write(events, jobs, self.card.variation_names, self._weights)
        return particles

    @property
    def pileup_library(self) -> FinalState:
        """The minimum-bias library (a run sets it from ``OUTPUT.parts``; made here if not)."""
        if self._library is None:
            assert self.minimum_bias is not None  # a card with [pileup]
            self._library = make_library(self.minimum_bias)
            assert self._library is not None  # only a stop cuts the making short
        return self._library

    @pileup_library.setter
    def pileup_library(self, library: FinalState) -> None:
        self._library = library

    def _keys(self, jobs: list[Job]) -> tuple[np.ndarray, np.ndarray]:
        """The detector's and the pileup's random-number keys of each realization, from
        its coordinates. A ``stage = "pileup"`` realization keeps its base's detector
        seeds (only pileup changes), a ``stage = "detector"`` one its base's pileup."""
        card = self.card
        names, stages = card.variation_names, [v.stage for v in card.variations]
        detector, pileup = [], []
        with_pileup = any(p is not None for _, p in self._setups)
        for j in jobs:
            stage = stages[j.variation]
            own = (names[j.variation], j.event, j.realization, j.attempt)
            # A base is set, and used, for detector- and pileup-stage variations only.
            base = (cast(str, card.variations[j.variation].base), j.event, 0, j.attempt)
            detector.append(("detector", *(base if stage == "pileup" else own)))
            if with_pileup:
                pileup.append(("pileup", *(base if stage == "detector" else own)))
        return (derive_keys(card.run.seed, detector),
                derive_keys(card.run.seed, pileup))

    def _detect(self, particles: FinalState, jobs: list[Job]) -> tuple[FinalState, np.ndarray]:
        """Candidates of every realization as its jets see them (each variation's pileup,
        detector and mitigation, with seeds derived from the realization's coordinates,
        down to the jets' constituent threshold), and its number of pileup collisions."""
        detector_keys, pileup_keys = self._keys(jobs)
        which = self._setup_of[np.fromiter((j.variation for j in jobs), np.int64, len(jobs))]
        n_pileup = np.zeros(len(jobs), np.int64)
        pt_min = self.card.jets.constituent_pt_min
        parts, order = [], []
        per_realization = particles.offsets[-1] / max(len(jobs), 1)
        for s, (detector, pileup) in enumerate(self._setups):
            mine = np.flatnonzero(which == s)
            expected = per_realization + (0 if pileup is None else pileup.mu * (
                self.pileup_library.offsets[-1] / max(len(self.pileup_library), 1)))
            step = max(1, int(DETECTOR_PARTICLES_AT_ONCE / max(expected, 1.0)))
            for first in range(0, len(mine), step):
                these = mine[first:first + step]
                seen = _realizations(particles, these)
                if pileup is not None:
                    with self.timer.step("pileup"):
                        overlaid = overlay(seen, self.pileup_library, pileup_keys[these],
                                           pileup)
                        seen, n_pileup[these] = overlaid.particles, overlaid.n_pileup
                if pileup is None:  # the detector drops the soft candidates itself
                    candidates = detector.simulate(seen, detector_keys[these], pt_min)
                else:  # mitigation sees them all
                    candidates = detector.simulate(seen, detector_keys[these])
                    with self.timer.step("mitigation"):
                        candidates = mitigate(candidates, overlaid.vertex_z,
                                              overlaid.n_pileup, pileup)
                    candidates = _above(candidates, pt_min)
                parts.append(candidates)
                order.append(these)
        candidates = FinalState.concatenate(parts)
        position = np.concatenate(order)
        if (np.diff(position) < 0).any():  # back into job order
            candidates = candidates.take(np.argsort(position))
        # The realizations' records (heavy hadrons, decay products) are the particles'.
        candidates.history = particles.history
        return candidates, n_pileup

    def block(self, first: int, last: int) -> tuple[dict[str, dict[str, np.ndarray]], BlockStats]:
        """Output tables for hard events [first, last)."""
        card, step = self.card, self.timer.step
        with step("hard process"):
            hard = [self.source.event(i) for i in range(first, last)]
            good = [h for h in hard if h is not None]
        with step("re-simulation"):  # reading its events is "final state" and "hepmc"
            if self.hepmc is not None:
                self._weights = {h.index: h.weight for h in good}
                self.hepmc.begin(first, last)
            real = self.resimulator.realize(good, read=self._final_state)
            if self.hepmc is not None:
                self.hepmc.end()
        with step("truth"):
            truth = TruthObjects.of(good, card.objects, card.path)
        tables = empty_tables()
        if real.jobs:
            with step("final state"):
                particles = FinalState.concatenate(real.events)
                jobs = real.jobs + real.copies
                if real.copies:  # detector-stage realizations see their base's particles
                    particles = particles.take(np.concatenate(
                        [np.arange(len(real.jobs)), np.asarray(real.copy_of, np.int64)]))
            with step("detector"):  # its pileup overlay and mitigation are timed apart
                candidates, n_pileup = (self._detect(particles, jobs) if self.detectors
                                        else (None, None))
            with step("jets"):
                if self.read_pt_min < card.jets.constituent_pt_min:
                    particles = _above(particles, card.jets.constituent_pt_min)
                jets = make_jets(particles, job_table(jobs), truth, card.jets,
                                 card.objects.contained, candidates, n_pileup)
            tables["jets"] = as_table("jets", jets.jets)
            tables["constituents"] = as_table("constituents", jets.constituents)
            tables["groups"] = as_table("groups", jets.groups)
        index = np.arange(first, last)
        tables["events"] = as_table("events", {
            "event": index,
            "n_objects": np.bincount(truth.event - first, minlength=last - first),
            "n_failed": [real.failed.get(int(i), 0) for i in index],
            "n_lost": [real.lost.get(int(i), 0) for i in index],
            "hard_ok": [h is not None for h in hard],
            "weight": [h.weight if h is not None else 0.0 for h in hard],
        })
        stats = BlockStats(events=last - first, realizations=len(real.jobs) + len(real.copies),
                           jets=len(tables["jets"]["pt"]), failed=sum(real.failed.values()))
        return tables, stats


def _realizations(particles: FinalState, these: np.ndarray) -> FinalState:
    """Realizations ``these`` of ``particles`` as the detector needs them (not their
    records): views of the columns if they are consecutive, else a copy."""
    if len(these) and these[-1] - these[0] == len(these) - 1 and (np.diff(these) == 1).all():
        start, stop = particles.offsets[these[0]], particles.offsets[these[-1] + 1]
        return FinalState({c: v[start:stop] for c, v in particles.columns.items()},
                          particles.offsets[these[0]:these[-1] + 2] - start)
    return particles.take(these)


def _above(particles: FinalState, pt_min: float) -> FinalState:
    """The particles (or candidates) with pT >= ``pt_min``."""
    c = particles.columns
    keep = c["px"] * c["px"] + c["py"] * c["py"] >= pt_min * pt_min
    return particles if keep.all() else particles.where(keep)



__all__ = ["DETECTOR_PARTICLES_AT_ONCE", "BlockStats", "InterruptedBlockError", "Pipeline"]

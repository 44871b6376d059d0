"""The downstream Pythias: frozen hard events in, realizations out.

Each variation owns one Pythia instance, set up once with the card's base settings plus
the variation's own, and fed by a :class:`~.handoff.Feeder`:

- ``stage = "shower"``: the instance runs everything after the hard process — ISR, FSR,
  MPI, colour reconnection, hadronization, decays;
- ``stage = "hadronization"``: one shared instance first makes a parton-level event per
  hard event with the base settings (kept in memory), then the variation's instance
  re-hadronizes it through a :class:`~.handoff.PartonLevelSwap`;
- ``stage = "detector"`` and ``stage = "pileup"``: no Pythia at all: their realizations
  are copies of the base variation's first realization of each hard event
  (:attr:`Realizations.copies`), which the detector then sees with new seeds, or with a
  new draw of pileup.

A realization Pythia cannot make (``next()`` false) is retried with the seed of the next
attempt; failures are counted per hard event, never fatal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import awkward as ak
import numpy as np
import pythia8mc

from resim.card import REUSING_STAGES, Card, PythiaSetting, Variation

from .final_state import present
from .handoff import Feeder, Job, PartonLevelSwap
from .hard_process import HardEvent
from .pythia_setup import common_settings, configure, initialize, new_pythia
from .seeds import derive_seed

#: Most events per ``nextBatch`` call: the call holds the full record of each (~1,800
#: entries, ~0.3 MB for a boosted top) until it is read.
EVENTS_PER_CALL = 256

_FRAME = PythiaSetting("", "Beams:frameType = 5")
_PARTONS_ONLY = (PythiaSetting("", "HadronLevel:all = off"),)
#: The hadronizing instance only needs the bare hard process before the swap; colour
#: reconnection must stay off or it would act a second time on the saved event.
_HADRONIZE_ONLY = tuple(PythiaSetting("", line) for line in (
    "PartonLevel:ISR = off", "PartonLevel:FSR = off", "PartonLevel:MPI = off",
    "PartonLevel:Remnants = off", "ColourReconnection:reconnect = off",
))


class Downstream:
    """One downstream Pythia instance with its feeder (and swap hook, to re-hadronize)."""

    def __init__(self, card: Card, beams: tuple[int, int, float, float],
                 settings: Iterable[PythiaSetting], key: str, what: str, swap: bool = False):
        self.feeder = Feeder(beams)
        self.pythia = new_pythia()
        configure(self.pythia, (*common_settings(card), _FRAME, *settings), card.path)
        self.pythia.setLHAupPtr(self.feeder)
        self.swap = PartonLevelSwap(self.pythia) if swap else None
        if self.swap is not None:
            self.pythia.setUserHooksPtr(self.swap)
            self.feeder.swap = self.swap
        initialize(self.pythia, card.path, key, what)
        self.feeder.rndm = self.pythia.rndm

    def run(self, items: list[tuple[Job, HardEvent, pythia8mc.Event | None]]) -> ak.Array:
        """One ``nextBatch`` over ``items``; entry i is job i's event, or None if it failed."""
        self.feeder.served.clear()
        for item in items:
            self.feeder.put(*item)
        batch = self.pythia.nextBatch(len(items), "none")
        # Pythia gives up on a failed event rather than asking for a new hard process
        # (no user vetoes here), so jobs and batch entries correspond one to one.
        if self.feeder.served != [job for job, _, _ in items] or self.feeder.pending():
            raise RuntimeError("downstream Pythia did not take exactly one hard process "
                               "per event; realizations cannot be matched to jobs")
        return batch

    def parton_level(self, job: Job, hard: HardEvent) -> pythia8mc.Event | None:
        """A parton-level event (for an instance made with HadronLevel off), or None."""
        self.feeder.served.clear()
        self.feeder.put(job, hard)
        ok = self.pythia.next()
        return pythia8mc.Event(self.pythia.event) if ok else None


#: Turns one ``nextBatch`` array (None for a failed event) and the jobs of its successful
#: events into what is kept of those events, in order — e.g. their visible final state.
Reader = Callable[[ak.Array, list[Job]], Any]


@dataclass
class Realizations:
    """Realizations of a set of hard events: Pythia events and the job that made each."""

    #: One entry per ``nextBatch`` call: what the reader kept of it (by default the array
    #: itself, None for each failed event); its successful events, in order, are ``jobs``.
    events: list[Any] = field(default_factory=list)
    jobs: list[Job] = field(default_factory=list)
    failed: dict[int, int] = field(default_factory=dict)  # hard event → failed attempts
    lost: dict[int, int] = field(default_factory=dict)  # hard event → realizations lost
    #: Realizations of ``stage = "detector"`` and ``"pileup"`` variations, and for each
    #: the position in ``jobs`` of the realization whose particle-level event it re-uses.
    copies: list[Job] = field(default_factory=list)
    copy_of: list[int] = field(default_factory=list)

    def add(self, batch: ak.Array, jobs: list[Job], read: Reader | None = None) -> list[Job]:
        """Keep the successful entries of a batch; return the jobs that failed."""
        ok = present(batch)
        if ok.any():
            made = [job for job, good in zip(jobs, ok, strict=True) if good]
            # Read at once, so the full event records (~2000 entries each) of only one
            # batch are in memory at a time.
            self.events.append(batch if read is None else read(batch, made))
            self.jobs.extend(made)
        bad = [job for job, good in zip(jobs, ok, strict=True) if not good]
        for job in bad:
            self.failed[job.event] = self.failed.get(job.event, 0) + 1
        return bad

    def count_lost(self, event: int, n: int = 1) -> None:
        self.lost[event] = self.lost.get(event, 0) + n


class Resimulator:
    """All downstream instances of a card, and the retry loop around them."""

    def __init__(self, card: Card, beams: tuple[int, int, float, float]):
        self.card = card
        self.stages: list[Downstream | None] = []
        for v in card.variations:
            if v.stage in REUSING_STAGES:  # re-uses another variation's events
                self.stages.append(None)
                continue
            key = f"variations.{v.name}"
            extra = _HADRONIZE_ONLY if v.stage == "hadronization" else ()
            self.stages.append(Downstream(card, beams, (*extra, *v.settings), key,
                                          f"variation '{v.name}'",
                                          swap=v.stage == "hadronization"))
        self.partons = None
        if any(v.stage == "hadronization" for v in card.variations):
            self.partons = Downstream(card, beams, _PARTONS_ONLY, "variations",
                                      "parton level for hadronization-only variations")

    def _seed(self, v: Variation, event: int, realization: int, attempt: int) -> int:
        return derive_seed(self.card.run.seed, v.stage, v.name, event, realization, attempt)

    def realize(self, hard_events: list[HardEvent], read: Reader | None = None) -> Realizations:
        """Every realization of every variation for these hard events, each batch of events
        passed through ``read`` as it comes."""
        out = Realizations()
        partons = self._freeze_partons(hard_events, out)
        for vi, (v, stage) in enumerate(zip(self.card.variations, self.stages, strict=True)):
            if stage is None:
                continue
            items = []
            for hard in hard_events:
                saved = partons.get(hard.index) if v.stage == "hadronization" else None
                if v.stage == "hadronization" and saved is None:
                    out.count_lost(hard.index, v.realizations)
                    continue
                for r in range(v.realizations):
                    job = Job(hard.index, vi, r, 0, self._seed(v, hard.index, r, 0))
                    items.append((job, hard, saved))
            for i in range(0, len(items), EVENTS_PER_CALL):
                self._run_with_retries(stage, v, items[i:i + EVENTS_PER_CALL], out, read)
        self._copy_reused(hard_events, out)
        return out

    def _copy_reused(self, hard_events: list[HardEvent], out: Realizations) -> None:
        """The realizations of ``stage = "detector"`` and ``"pileup"`` variations: copies
        of their base variation's realization 0 (lost with it, if it was)."""
        names = self.card.variation_names
        first = {(job.event, job.variation): i for i, job in enumerate(out.jobs)
                 if job.realization == 0}
        for vi, v in enumerate(self.card.variations):
            if v.stage not in REUSING_STAGES:
                continue
            base = names.index(v.base)
            for hard in hard_events:
                source = first.get((hard.index, base))
                if source is None:
                    out.count_lost(hard.index, v.realizations)
                    continue
                made = out.jobs[source]
                for r in range(v.realizations):
                    out.copies.append(Job(hard.index, vi, r, made.attempt, made.seed))
                    out.copy_of.append(source)

    def _run_with_retries(self, stage: Downstream, v: Variation,
                          items: list[tuple[Job, HardEvent, pythia8mc.Event | None]],
                          out: Realizations, read: Reader | None) -> None:
        while items:
            by_job = {job: (hard, saved) for job, hard, saved in items}
            failed = out.add(stage.run(items), [job for job, _, _ in items], read)
            items = []
            for job in failed:
                if job.attempt + 1 >= self.card.run.max_attempts:
                    out.count_lost(job.event)
                    continue
                retry = Job(job.event, job.variation, job.realization, job.attempt + 1,
                            self._seed(v, job.event, job.realization, job.attempt + 1))
                items.append((retry, *by_job[job]))

    def _freeze_partons(self, hard_events: list[HardEvent],
                        out: Realizations) -> dict[int, pythia8mc.Event]:
        """One parton-level event per hard event, shared by hadronization-only variations."""
        saved: dict[int, pythia8mc.Event] = {}
        if self.partons is None:
            return saved
        for hard in hard_events:
            for attempt in range(self.card.run.max_attempts):
                seed = derive_seed(self.card.run.seed, "partons", hard.index, attempt)
                event = self.partons.parton_level(Job(hard.index, -1, 0, attempt, seed), hard)
                if event is not None:
                    saved[hard.index] = event
                    break
                out.failed[hard.index] = out.failed.get(hard.index, 0) + 1
        return saved


def job_table(jobs: list[Job]) -> dict[str, np.ndarray]:
    """Jobs as columns, for the jets and the output file."""
    return {
        "event": np.fromiter((j.event for j in jobs), np.int64, len(jobs)),
        "variation": np.fromiter((j.variation for j in jobs), np.int8, len(jobs)),
        "realization": np.fromiter((j.realization for j in jobs), np.int16, len(jobs)),
        "seed": np.fromiter((j.seed for j in jobs), np.int32, len(jobs)),
    }

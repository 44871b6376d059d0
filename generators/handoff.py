"""Hand frozen events to a downstream Pythia in memory, one job per ``next()``.

:class:`Feeder` is a Les Houches "user process" (``LHAup``): a downstream Pythia set up
with ``Beams:frameType = 5`` calls its ``setEvent`` at the start of every ``next()``. The
feeder then takes the next queued job, re-seeds the downstream generator with the job's
seed — so the realization depends on nothing but its seed — and copies the frozen hard
process in. Because the feeder is called from inside ``next()``, a whole batch of jobs
runs in one ``nextBatch`` call and comes back as one columnar (awkward) array.

:class:`PartonLevelSwap` is the second intervention point: a user hook that, just before
hadronization, replaces the (trivial) parton-level event with a saved one, so a batch of
hadronization-only realizations also runs through ``nextBatch``.

Pythia keeps raw pointers to both objects: whoever creates them must keep a Python
reference for as long as the Pythia instance lives.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import pythia8mc

from .hard_process import HardEvent

#: Les Houches process code used for every handed-over event.
PROCESS_CODE = 9999


@dataclass(frozen=True)
class Job:
    """One realization to make: where it sits in the run and the seed that makes it."""

    event: int
    variation: int  # index into the card's variations
    realization: int
    attempt: int
    seed: int


class Feeder(pythia8mc.LHAup):
    """Serves queued (job, hard event) pairs to the downstream Pythia that owns it."""

    def __init__(self, beams: tuple[int, int, float, float]):
        super().__init__()
        self._beams = beams
        self._queue: deque[tuple[Job, HardEvent, pythia8mc.Event | None]] = deque()
        self.served: list[Job] = []
        self.rndm: pythia8mc.Rndm | None = None  # the downstream's generator, set by owner
        self.swap: PartonLevelSwap | None = None

    def put(self, job: Job, hard: HardEvent, partons: pythia8mc.Event | None = None) -> None:
        self._queue.append((job, hard, partons))

    def pending(self) -> int:
        return len(self._queue)

    def setInit(self) -> bool:
        id_a, id_b, e_a, e_b = self._beams
        self.setBeamA(id_a, e_a)
        self.setBeamB(id_b, e_b)
        # Strategy 3: unweighted events, Pythia accepts each one as given.
        self.setStrategy(3)
        self.addProcess(PROCESS_CODE, 1.0, 0.0, 1.0)
        return True

    def setEvent(self, idProcess: int = 0) -> bool:
        if not self._queue:
            return False  # Pythia reads this as end of input
        job, hard, partons = self._queue.popleft()
        self.served.append(job)
        assert self.rndm is not None, "the owner sets rndm before Pythia asks for events"
        self.rndm.init(job.seed)
        if self.swap is not None:
            self.swap.saved, self.swap.seed = partons, job.seed
        self.setProcess(PROCESS_CODE, 1.0, hard.scale, hard.alpha_qed, hard.alpha_qcd)
        for row in hard.rows:
            self.addParticle(*row)
        self.setIdX(hard.id1, hard.id2, hard.x1, hard.x2)
        self.setPdf(hard.id1pdf, hard.id2pdf, hard.x1pdf, hard.x2pdf, hard.q_fac,
                    hard.pdf1, hard.pdf2, True)
        return True


class PartonLevelSwap(pythia8mc.UserHooks):
    """Replaces the parton-level event with ``saved`` right before hadronization.

    ``doReconnectResonanceSystems`` is the last hook Pythia calls on a writable event
    before string fragmentation; the hadronizing instance runs with ISR, FSR and MPI off,
    so the event it replaces is only the bare hard process.

    An assigned ``Event`` keeps the *source* instance's particle data, and with it that
    instance's random generator (hadron masses and decay channels draw from it): the
    event is re-pointed at the hadronizing instance's own particle data, or
    hadronization would not be a function of the realization's seed.
    """

    def __init__(self, pythia: pythia8mc.Pythia) -> None:
        super().__init__()
        self._pythia = pythia
        self.saved: pythia8mc.Event | None = None
        self.seed = 0

    def canReconnectResonanceSystems(self) -> bool:
        return True

    def doReconnectResonanceSystems(self, oldSizeEvent: int, event: pythia8mc.Event) -> bool:
        event.assign(self.saved)
        event.init("(complete event)", self._pythia.particleData)
        event.restorePtrs()
        # Whatever the bare hard process drew before this point, hadronization starts
        # from the realization's seed.
        self._pythia.rndm.init(self.seed)
        return True

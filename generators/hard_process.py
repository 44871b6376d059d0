"""The upstream Pythia: makes (or reads) hard processes and freezes them.

The upstream runs the process level only — the hard scattering and its resonance decays
(with the card's forced decays), no parton or hadron level. Each accepted hard process is
frozen as a :class:`HardEvent`: the ``process`` record in Les Houches form plus the
incoming-parton information (x1, x2, PDFs, couplings) read from a *fresh*
``infoPython()`` after every event — ``infoPython()`` returns a copy, and a stale copy
gives wrong showers downstream.

Hard event ``i`` is a pure function of (card, i): the upstream is re-seeded before each
event (internal processes), or event ``i`` is the ``i``-th of the Les Houches file.
"""

from __future__ import annotations

import gzip
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pythia8mc

from resim.card import DECAY_FILTER, Card, CardError, PythiaSetting
from resim.errors import FailureError

from .pythia_setup import common_settings, configure, initialize, new_pythia
from .seeds import derive_seed

#: One Les Houches particle (HEPEUP row), in ``LHAup.addParticle`` argument order.
LHA_FIELDS = (
    ("id", np.int32), ("status", np.int32), ("mother1", np.int32), ("mother2", np.int32),
    ("col", np.int32), ("acol", np.int32), ("px", np.float64), ("py", np.float64),
    ("pz", np.float64), ("e", np.float64), ("m", np.float64), ("tau", np.float64),
    ("spin", np.float64), ("scale", np.float64),
)
LHA_DTYPE = np.dtype(list(LHA_FIELDS))

#: Les Houches status codes.
INCOMING, OUTGOING, DECAYED = -1, 1, 2


class HardProcessError(FailureError, RuntimeError):
    """A hard event could not be made or read (e.g. a corrupt Les Houches event)."""


@dataclass(frozen=True)
class HardEvent:
    """A frozen hard process: everything a downstream Pythia needs to shower it."""

    index: int
    particles: np.ndarray  # LHA_DTYPE, Les Houches ordering (mothers 1-based, 0 = none)
    scale: float
    alpha_qed: float
    alpha_qcd: float
    id1: int
    id2: int
    x1: float
    x2: float
    id1pdf: int
    id2pdf: int
    x1pdf: float
    x2pdf: float
    q_fac: float
    pdf1: float
    pdf2: float
    weight: float = 1.0
    #: addParticle arguments, converted once rather than once per realization.
    rows: list[tuple] = field(default_factory=list, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.rows:
            self.rows.extend(self.particles.tolist())


def freeze(process: pythia8mc.Event, info: pythia8mc.Info, index: int) -> HardEvent:
    """Snapshot a Pythia ``process`` record (entries 3…) as a Les Houches event."""
    rows = []
    for i in range(3, process.size()):
        p = process[i]
        status = p.status()
        lha = INCOMING if status == -21 else (OUTGOING if p.isFinal() else DECAYED)
        rows.append((
            p.id(), lha, max(0, p.mother1() - 2), max(0, p.mother2() - 2), p.col(), p.acol(),
            p.px(), p.py(), p.pz(), p.e(), p.m(), p.tau(), p.pol(), p.scale(),
        ))
    return HardEvent(
        index=index, particles=np.array(rows, dtype=LHA_DTYPE), scale=process.scale(),
        alpha_qed=info.alphaEM(), alpha_qcd=info.alphaS(), id1=info.id1(), id2=info.id2(),
        x1=info.x1(), x2=info.x2(), id1pdf=info.id1pdf(), id2pdf=info.id2pdf(),
        x1pdf=info.x1pdf(), x2pdf=info.x2pdf(), q_fac=info.QFac(), pdf1=info.pdf1(),
        pdf2=info.pdf2(), weight=info.weight(),
    )


_EVENT_TAG = re.compile(rb"<event[\s>]")  # not <eventgroup>


def count_lhe_events(path: Path, chunk_bytes: int = 1 << 24) -> int:
    """Number of ``<event>`` blocks in a Les Houches file (plain or gzipped)."""
    opener = gzip.open if path.suffix == ".gz" else open
    count, tail = 0, b""
    with opener(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            data = tail + chunk
            # Keep the last bytes for the next round, so a tag split between chunks is
            # seen whole there (and one wholly inside them is not counted twice).
            tail = data[-7:]
            count += len(_EVENT_TAG.findall(data)) - len(_EVENT_TAG.findall(tail))
    return count + len(_EVENT_TAG.findall(tail))


class HardProcessSource:
    """Hard events by index, from Pythia's own processes or a Les Houches file."""

    def __init__(self, card: Card):
        self.card = card
        self.lhe_events = None
        if card.hard_process.lhe is not None:
            # Pythia's reader takes a malformed event for the end of the file; knowing the
            # real length tells the two apart, and a too-short file is caught up front.
            try:
                self.lhe_events = count_lhe_events(card.hard_process.lhe)
            except (OSError, EOFError, zlib.error) as err:  # not gzip, truncated, unreadable
                raise CardError(card.path, "hard_process.lhe", f"cannot read "
                                f"{card.hard_process.lhe}: {err}") from None
            if self.lhe_events == 0:
                raise CardError(card.path, "hard_process.lhe", f"{card.hard_process.lhe} has "
                                "no <event> blocks: not a Les Houches event file")
            if card.run.events > self.lhe_events:
                raise CardError(card.path, "run.events", f"the Les Houches file "
                                f"{card.hard_process.lhe} has {self.lhe_events} events, the "
                                f"run asks for {card.run.events}")
        self.pythia = new_pythia()
        # Pythia's resonance-decay filter (e.g. exactly one W -> l nu of two) is a user hook;
        # it registers its settings afresh, so it must exist before they are read.
        self._decay_filter = None
        if any(s.name.startswith(DECAY_FILTER) for s in card.hard_process.settings):
            self._decay_filter = pythia8mc.ResonanceDecayFilterHook(self.pythia.settings)
        configure(self.pythia, self._settings(card), card.path)
        if self._decay_filter is not None:
            self.pythia.setUserHooksPtr(self._decay_filter)
        initialize(self.pythia, card.path, "hard_process", "hard process")
        self._lhe_position = 0  # next unread event of the Les Houches file

    @staticmethod
    def _settings(card: Card) -> tuple[PythiaSetting, ...]:
        beams = card.beams
        frame: tuple[PythiaSetting, ...]
        if card.hard_process.lhe is not None:
            frame = (
                PythiaSetting("hard_process.lhe", "Beams:frameType = 4"),
                PythiaSetting("hard_process.lhe", f"Beams:LHEF = {card.hard_process.lhe}"),
            )
        else:
            frame = (
                PythiaSetting("beams.id_a", f"Beams:idA = {beams.id_a}"),
                PythiaSetting("beams.id_b", f"Beams:idB = {beams.id_b}"),
                PythiaSetting("beams.ecm", f"Beams:eCM = {beams.ecm!r}"),
            )
        upstream_only = (
            PythiaSetting("", "PartonLevel:all = off"),
            PythiaSetting("", "HadronLevel:all = off"),
        )
        return common_settings(card) + frame + card.hard_process.settings + upstream_only

    @property
    def reads_file(self) -> bool:
        return self.card.hard_process.lhe is not None

    def beams(self) -> tuple[int, int, float, float]:
        """(idA, idB, eA, eB) as the upstream set them up (from the card or the LHE file)."""
        info = self.pythia.infoPython()
        return info.idA(), info.idB(), info.eA(), info.eB()

    def event(self, index: int) -> HardEvent | None:
        """Hard event ``index``, or None if Pythia could not make it.

        For internal processes a failed attempt is retried with the next derived seed;
        a Les Houches event that Pythia rejects is reported as None (it is one event of
        the file, there is nothing to retry).
        """
        if self.reads_file:
            self._seek(index)
            self.pythia.rndm.init(derive_seed(self.card.run.seed, "hard", index))
            ok = self.pythia.next()
            self._lhe_position += 1
            if not ok and self.pythia.infoPython().atEndOfFile():
                raise HardProcessError(
                    f"{self.card.hard_process.lhe}: hard event {index} (<event> block "
                    f"{index + 1} of {self.lhe_events}) cannot be read; Pythia's reader stops "
                    "there, so the file is malformed at or after that event")
            return freeze(self.pythia.process, self.pythia.infoPython(), index) if ok else None
        for attempt in range(self.card.run.max_attempts):
            self.pythia.rndm.init(derive_seed(self.card.run.seed, "hard", index, attempt))
            if self.pythia.next():
                return freeze(self.pythia.process, self.pythia.infoPython(), index)
        return None

    def _seek(self, index: int) -> None:
        if index < self._lhe_position:
            raise HardProcessError("Les Houches events can only be read forwards")
        if index > self._lhe_position:
            self.pythia.LHAeventSkip(index - self._lhe_position)
            self._lhe_position = index

    def cross_section_pb(self) -> float:
        return self.pythia.infoPython().sigmaGen() * 1e9

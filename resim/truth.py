"""Truth objects: the hard-process particles that seed groups, with their labels.

An object is an outgoing particle of the frozen hard process whose |PDG id| the card lists
in ``[objects] pdg`` — a top, a W, Z or Higgs boson, or an outgoing parton for QCD. Its
*group* collects the jet matched to it in every realization. The group id is
``event * MAX_OBJECTS + k`` for the k-th object of the event, so it is the same however
the run is split across ranks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import vector

from resim.card import Objects
from resim.errors import ResimError
from resim.generators.hard_process import INCOMING, LHA_DTYPE, OUTGOING, HardEvent

MAX_OBJECTS = 16
#: Decay products a contained jet must hold: quarks, gluons and charged leptons (a W -> l nu
#: in the jet leaves its lepton there; the neutrino is invisible and is not required).
_CONTAINED = np.array([1, 2, 3, 4, 5, 6, 21, 11, 13, 15])


class TooManyObjectsError(ResimError, ValueError):
    """A hard event has more objects than group ids number per event: the card's
    ``[objects] pdg`` selects too many of its particles (exit code 2)."""


@dataclass(frozen=True)
class TruthObjects:
    """Objects of a set of hard events, as columns (one row per object)."""

    event: np.ndarray  # int64
    index: np.ndarray  # int8, k-th object of its event
    pid: np.ndarray  # int32
    label: np.ndarray  # int8, index into the card's labels
    p4: vector.MomentumNumpy4D
    #: Position of the object in its hard event's particle list (Les Houches order).
    row: np.ndarray  # int32
    #: Final quarks, gluons and charged leptons from each object's decay (for containment),
    #: flattened: ``daughter_object`` is the object row each belongs to.
    daughter_object: np.ndarray
    daughter_eta: np.ndarray
    daughter_phi: np.ndarray

    @property
    def group(self) -> np.ndarray:
        return self.event * MAX_OBJECTS + self.index

    @property
    def record_index(self) -> np.ndarray:
        """Position of each object in a realization's event record: the hard process follows
        the system entry and the two beams, in Les Houches order."""
        return self.row + 3

    def __len__(self) -> int:
        return len(self.event)

    @classmethod
    def of(cls, hard_events: list[HardEvent], spec: Objects,
           card: str | Path | None = None) -> TruthObjects:
        """The objects of ``hard_events``, found with array operations over all their
        particles at once (a block has tens to hundreds of hard events). ``card``: the
        card's path, named in the error of an event with too many objects."""
        parts = (np.concatenate([h.particles for h in hard_events]) if hard_events
                 else np.empty(0, LHA_DTYPE))
        sizes = np.array([len(h.particles) for h in hard_events], np.int64)
        first = np.cumsum(sizes) - sizes  # row of each event's first particle
        position = np.repeat(np.arange(len(sizes)), sizes)  # event position of each row
        is_object = np.isin(np.abs(parts["id"]), spec.pdg) & (parts["status"] != INCOMING)
        rows = np.flatnonzero(is_object)
        at = position[rows]
        k = np.arange(len(rows)) - np.searchsorted(at, at, "left")  # k-th object of its event
        if len(k) and k.max() >= MAX_OBJECTS:
            worst = hard_events[at[np.argmax(k)]]
            raise TooManyObjectsError(
                f"{'' if card is None else f'{card}: '}objects.pdg: hard event {worst.index} "
                f"has {np.sum(at == at[np.argmax(k)])} objects (hard-process particles with "
                f"|PDG id| in {list(spec.pdg)}), more than the {MAX_OBJECTS} a group id "
                "numbers per event: list fewer PDG ids in [objects] pdg")
        objects = parts[rows]
        label_of = {abs(p): spec.label_of(p) for p in np.unique(np.abs(objects["id"])).tolist()}

        # Final partons and charged leptons descending from each object (through any number of
        # decays, following first mothers): walk every row's ancestry upwards at once.
        mother = np.where(parts["mother1"] > 0, first[position] + parts["mother1"] - 1, -1)
        pairs = []  # (object row, descendant row)
        row, up = np.arange(len(parts)), mother
        for _ in range(int(sizes.max(initial=0))):  # no chain is longer than its event
            alive = up >= 0
            if not alive.any():
                break
            row, up = row[alive], up[alive]
            hit = is_object[up]
            pairs.append(np.stack([up[hit], row[hit]]))
            up = mother[up]
        pair = np.unique(np.concatenate([np.empty((2, 0), np.int64), *pairs], axis=1), axis=1)
        owner, daughter = pair
        d = parts[daughter]
        keep = (d["status"] == OUTGOING) & np.isin(np.abs(d["id"]), _CONTAINED)
        d = d[keep]
        dv = cast(vector.MomentumNumpy4D,
                  vector.array({"px": d["px"], "py": d["py"], "pz": d["pz"], "E": d["e"]}))
        return cls(
            event=np.array([h.index for h in hard_events], np.int64)[at],
            index=k.astype(np.int8), pid=objects["id"].astype(np.int32),
            label=np.array([label_of[abs(p)] for p in objects["id"].tolist()], np.int8),
            p4=cast(vector.MomentumNumpy4D, vector.array({"px": objects["px"].astype(float),
                                                          "py": objects["py"].astype(float),
                                                          "pz": objects["pz"].astype(float),
                                                          "E": objects["e"].astype(float)})),
            row=(rows - first[at]).astype(np.int32),
            daughter_object=np.searchsorted(rows, owner[keep]).astype(np.int64),
            daughter_eta=np.asarray(dv.eta, float), daughter_phi=np.asarray(dv.phi, float),
        )

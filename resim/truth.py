"""Truth objects: the hard-process particles that seed groups, with their labels.

An object is an outgoing particle of the frozen hard process whose |PDG id| the card lists
in ``[objects] pdg`` — a top, a W, Z or Higgs boson, or an outgoing parton for QCD. Its
*group* collects the jet matched to it in every realization. The group id is
``event * MAX_OBJECTS + k`` for the k-th object of the event, so it is the same however
the run is split across ranks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import vector

from resim.card import Objects
from resim.generators.hard_process import INCOMING, OUTGOING, HardEvent

MAX_OBJECTS = 16
_COLOURED = np.array([1, 2, 3, 4, 5, 6, 21])


@dataclass(frozen=True)
class TruthObjects:
    """Objects of a set of hard events, as columns (one row per object)."""

    event: np.ndarray  # int64
    index: np.ndarray  # int8, k-th object of its event
    pid: np.ndarray  # int32
    label: np.ndarray  # int8, index into the card's labels
    p4: vector.MomentumNumpy4D
    #: Coloured final partons from each object's decay (for containment), flattened:
    #: ``daughter_object`` is the object row each belongs to.
    daughter_object: np.ndarray
    daughter_eta: np.ndarray
    daughter_phi: np.ndarray

    @property
    def group(self) -> np.ndarray:
        return self.event * MAX_OBJECTS + self.index

    def __len__(self) -> int:
        return len(self.event)

    @classmethod
    def of(cls, hard_events: list[HardEvent], spec: Objects) -> TruthObjects:
        rows: list[tuple] = []
        daughters: list[tuple] = []
        wanted = np.array(spec.pdg)
        for hard in hard_events:
            parts = hard.particles
            picks = np.flatnonzero(np.isin(np.abs(parts["id"]), wanted)
                                   & (parts["status"] != INCOMING))
            if len(picks) > MAX_OBJECTS:
                raise ValueError(f"hard event {hard.index} has {len(picks)} objects, "
                                 f"more than {MAX_OBJECTS}")
            for k, i in enumerate(picks):
                p = parts[i]
                rows.append((hard.index, k, p["id"], spec.label_of(int(p["id"])),
                             p["px"], p["py"], p["pz"], p["e"]))
                d = parts[hard.descendants(i)]
                d = d[(d["status"] == OUTGOING) & np.isin(np.abs(d["id"]), _COLOURED)]
                dv = vector.array({"px": d["px"], "py": d["py"], "pz": d["pz"], "E": d["e"]})
                daughters += [(len(rows) - 1, eta, phi) for eta, phi in zip(dv.eta, dv.phi,
                                                                            strict=True)]
        cols = list(zip(*rows, strict=True)) if rows else [()] * 8
        dcols = list(zip(*daughters, strict=True)) if daughters else [()] * 3
        return cls(
            event=np.array(cols[0], np.int64), index=np.array(cols[1], np.int8),
            pid=np.array(cols[2], np.int32), label=np.array(cols[3], np.int8),
            p4=vector.array({"px": np.array(cols[4], float), "py": np.array(cols[5], float),
                             "pz": np.array(cols[6], float), "E": np.array(cols[7], float)}),
            daughter_object=np.array(dcols[0], np.int64),
            daughter_eta=np.array(dcols[1], float), daughter_phi=np.array(dcols[2], float),
        )

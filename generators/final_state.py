"""Visible final-state particles of Pythia events, columnar from ``nextBatch`` output.

"Visible" is Pythia's own notion (``ParticleData.isVisible``): neutrinos and other
particles that leave no trace are dropped before clustering. Charge is looked up per
PDG id from Pythia's particle table, since ``nextBatch`` does not carry it. Production
vertices (mm) are zero where Pythia set none (the particle comes from the primary vertex).
"""

from __future__ import annotations

import awkward as ak
import numpy as np
import pythia8mc


class ParticleTable:
    """Charge and visibility per PDG id, looked up once per id and cached."""

    def __init__(self, particle_data: pythia8mc.ParticleData):
        self._data = particle_data
        self._ids = np.empty(0, np.int64)
        self._charge = np.empty(0, np.int8)
        self._visible = np.empty(0, bool)

    def _add(self, new: np.ndarray) -> None:
        ids = np.concatenate([self._ids, new])
        order = np.argsort(ids)
        charge = np.concatenate([self._charge, [round(self._data.charge(int(i))) for i in new]])
        visible = np.concatenate([self._visible, [self._data.isVisible(int(i)) for i in new]])
        self._ids, self._charge, self._visible = ids[order], charge[order], visible[order]

    def _find(self, pid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        at = np.minimum(np.searchsorted(self._ids, pid), max(len(self._ids) - 1, 0))
        known = self._ids[at] == pid if len(self._ids) else np.zeros(len(pid), bool)
        return at, known

    def lookup(self, pid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(charge, visible) for each entry of ``pid``."""
        at, known = self._find(pid)
        if not known.all():  # rare after the first events: a species not seen before
            self._add(np.unique(pid[~known]))
            at, _ = self._find(pid)
        return self._charge[at], self._visible[at]


def visible_final_state(events: ak.Array, table: ParticleTable, pt_min: float = 0.0) -> ak.Array:
    """Per event, a packed list of ``{px, py, pz, E, pid, charge, vx, vy, vz}`` records."""
    prt = events.prt
    entries = ak.to_numpy(ak.num(prt))

    def column(array: ak.Array) -> np.ndarray:
        # A flat numpy view of one column of every event; a missing vertex is the origin.
        flat = ak.to_numpy(ak.flatten(array), allow_missing=True)
        return np.ma.filled(flat, 0.0) if np.ma.isMaskedArray(flat) else flat

    final = np.flatnonzero(column(prt.status) > 0)
    pid = column(prt.id)[final]
    charge, keep = table.lookup(pid)
    if pt_min > 0:
        keep &= np.hypot(column(prt.p.px)[final], column(prt.p.py)[final]) >= pt_min
    take = final[keep]  # flat entries of the kept particles: each column is gathered once
    vertex = prt.vProd
    columns = {
        "px": column(prt.p.px)[take], "py": column(prt.p.py)[take],
        "pz": column(prt.p.pz)[take], "E": column(prt.p.e)[take],
        "pid": pid[keep].astype(np.int32), "charge": charge[keep],
        "vx": column(vertex.px)[take], "vy": column(vertex.py)[take],
        "vz": column(vertex.pz)[take],
    }
    counts = np.diff(np.searchsorted(take, np.concatenate([[0], np.cumsum(entries)])))
    return ak.unflatten(ak.zip(columns), counts)

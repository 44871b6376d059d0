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

    def lookup(self, pid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(charge, visible) for each entry of ``pid``."""
        new = np.setdiff1d(np.unique(pid), self._ids)
        if len(new):
            ids = np.concatenate([self._ids, new])
            order = np.argsort(ids)
            charge = np.concatenate([self._charge, [round(self._data.charge(int(i))) for i in new]])
            visible = np.concatenate([self._visible, [self._data.isVisible(int(i)) for i in new]])
            self._ids, self._charge, self._visible = ids[order], charge[order], visible[order]
        at = np.searchsorted(self._ids, pid)
        return self._charge[at].astype(np.int8), self._visible[at]


def visible_final_state(events: ak.Array, table: ParticleTable, pt_min: float = 0.0) -> ak.Array:
    """Per event, a packed list of ``{px, py, pz, E, pid, charge, vx, vy, vz}`` records."""
    prt = events.prt
    final = prt.status > 0
    counts = ak.to_numpy(ak.sum(final, axis=1))
    flat = ak.to_numpy(ak.flatten(final))

    def column(array: ak.Array) -> np.ndarray:
        return ak.to_numpy(ak.flatten(array))[flat]

    pid = column(prt.id)
    px, py = column(prt.p.px), column(prt.p.py)
    charge, keep = table.lookup(pid)
    if pt_min > 0:
        keep &= np.hypot(px, py) >= pt_min
    row = np.repeat(np.arange(len(counts)), counts)[keep]
    vertex = prt.vProd
    columns = {
        "px": px[keep], "py": py[keep], "pz": column(prt.p.pz)[keep],
        "E": column(prt.p.e)[keep], "pid": pid[keep].astype(np.int32), "charge": charge[keep],
        "vx": np.nan_to_num(column(ak.fill_none(vertex.px, 0.0)))[keep],
        "vy": np.nan_to_num(column(ak.fill_none(vertex.py, 0.0)))[keep],
        "vz": np.nan_to_num(column(ak.fill_none(vertex.pz, 0.0)))[keep],
    }
    return ak.unflatten(ak.zip(columns), np.bincount(row, minlength=len(counts)))

"""Visible final-state particles of Pythia events, columnar from ``nextBatch`` output.

"Visible" is Pythia's own notion (``ParticleData.isVisible``): neutrinos and other
particles that leave no trace are dropped before clustering. Charge is looked up per
PDG id from Pythia's particle table, since ``nextBatch`` does not carry it. Production
vertices (mm) are zero where Pythia set none (the particle comes from the primary vertex).

The particles come back as :class:`FinalState`: flat numpy columns plus per-event offsets,
and what the same record says beyond the final state (:class:`~.history.History`: heavy
hadrons, hard-gluon branchings, resonance decay products), which is not kept.
They are read straight from the buffers of the awkward array ``nextBatch`` builds (each
column gathered once, with one index array), because going through awkward's high-level
operations — flattening each field, filling the optional vertices, zipping, unflattening
and concatenating batches — cost several times more than the gathering itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import awkward as ak
import numpy as np
import pythia8mc

from resim.ranges import ranges

from .history import History, record_history

#: Columns of a :class:`FinalState`, in output order.
COLUMNS = ("px", "py", "pz", "E", "pid", "charge", "vx", "vy", "vz")


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


@dataclass
class FinalState:
    """Particles of many events, flat: event ``i`` owns rows ``offsets[i]:offsets[i+1]``
    of every column (``COLUMNS``, and whatever else a producer adds: the detector's
    candidates carry impact parameters and their kind)."""

    columns: dict[str, np.ndarray]
    offsets: np.ndarray  # int64, one more than the number of events
    #: What each event's record said beyond its final state (empty where not read).
    #: Always a History once made: left out, __post_init__ makes an empty one.
    history: History = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.history is None:
            self.history = History.empty(len(self))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    @classmethod
    def concatenate(cls, parts: list[FinalState]) -> FinalState:
        if len(parts) == 1:
            return parts[0]
        sizes = np.cumsum([0] + [p.offsets[-1] for p in parts[:-1]])
        offsets = np.concatenate([[0]] + [p.offsets[1:] + s for p, s in zip(parts, sizes,
                                                                               strict=True)])
        return cls({c: np.concatenate([p.columns[c] for p in parts]) for c in parts[0].columns},
                   offsets.astype(np.int64),
                   History.concatenate([p.history for p in parts]))

    def take(self, events: np.ndarray) -> FinalState:
        """Events ``events`` (in that order, repeats allowed) as a new FinalState."""
        counts = self.counts[events]
        rows = np.repeat(self.offsets[events] - (np.cumsum(counts) - counts), counts)
        rows += np.arange(counts.sum(), dtype=np.int64)
        return FinalState({c: v[rows] for c, v in self.columns.items()},
                          np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
                          self.history.take(events))

    def where(self, keep: np.ndarray) -> FinalState:
        """The rows where ``keep`` is true, each event keeping its own."""
        ends = np.concatenate([[0], np.cumsum(keep)])[self.offsets]
        return FinalState({c: v[keep] for c, v in self.columns.items()}, ends.astype(np.int64),
                          self.history)

    def event_index(self) -> np.ndarray:
        """The event of every row."""
        return np.repeat(np.arange(len(self)), self.counts)

    def momenta(self) -> ak.Array:
        """Per event, the (px, py, pz, E) records — a packed jagged array over the columns
        (no copy), as FastJet's multi-event interface takes it."""
        record = ak.contents.RecordArray(
            [ak.contents.NumpyArray(self.columns[c]) for c in ("px", "py", "pz", "E")],
            ["px", "py", "pz", "E"])
        return ak.Array(ak.contents.ListOffsetArray(ak.index.Index64(self.offsets), record))

    def to_awkward(self) -> ak.Array:
        """Per event, a list of particle records (for inspection and tests)."""
        return ak.unflatten(ak.zip(dict(self.columns)), self.counts)


def _numpy(layout: ak.contents.Content) -> np.ndarray:
    if isinstance(layout, ak.contents.NumpyArray):
        return np.asarray(layout.data)
    return ak.to_numpy(ak.Array(layout))  # not what nextBatch builds, but correct


def present(events: ak.Array) -> np.ndarray:
    """Which entries of a ``nextBatch`` array are events (not None for a failed one)."""
    layout = ak.to_layout(events)
    if isinstance(layout, ak.contents.IndexedOptionArray):
        return np.asarray(layout.index.data) >= 0
    return ~ak.to_numpy(ak.is_none(events, axis=0))


def _event_ranges(events: ak.Array) -> tuple[ak.contents.RecordArray, np.ndarray, np.ndarray]:
    """The particle records of ``events`` and each non-missing event's [start, stop) in them.

    ``nextBatch(n, "none")`` gives an option array (None for an event Pythia failed to
    make); missing events are left out here, so event i of the result is the i-th event
    that exists.
    """
    layout = ak.to_layout(events)
    rows = None
    if isinstance(layout, ak.contents.IndexedOptionArray | ak.contents.IndexedArray):
        index = np.asarray(layout.index.data)
        rows, layout = index[index >= 0], layout.content
    elif layout.is_option:  # masked forms: let awkward drop the missing entries
        layout = ak.to_layout(ak.drop_none(ak.Array(layout), axis=0))
    prt = layout.content("prt")
    if isinstance(prt, ak.contents.ListOffsetArray):
        offsets = np.asarray(prt.offsets.data)
        starts, stops = offsets[:-1], offsets[1:]
    else:
        starts, stops = np.asarray(prt.starts.data), np.asarray(prt.stops.data)
    starts, stops = starts[: layout.length], stops[: layout.length]
    if rows is not None:
        starts, stops = starts[rows], stops[rows]
    return prt.content, starts.astype(np.int64), stops.astype(np.int64)


def visible_final_state(events: ak.Array, table: ParticleTable,
                        pt_min: float = 0.0) -> FinalState:
    """Visible final-state particles of every (non-missing) event of a ``nextBatch`` array."""
    prt, starts, stops = _event_ranges(events)
    status = _numpy(prt.content("status"))
    owner = None  # which event each entry belongs to, when events are not back to back
    if len(starts) and np.array_equal(starts[1:], stops[:-1]):  # as nextBatch builds them
        final = starts[0] + np.flatnonzero(status[starts[0]:stops[-1]] > 0)
    else:
        entries, owner = ranges(starts, stops - starts)
        is_final = status[entries] > 0
        final, owner = entries[is_final], owner[is_final]
    # Cheapest cut first: about half the final state is below a typical pT threshold.
    momentum = prt.content("p")
    px, py = _numpy(momentum.content("px")), _numpy(momentum.content("py"))
    if pt_min > 0:
        pfx, pfy = px[final], py[final]
        hard_enough = pfx * pfx + pfy * pfy >= pt_min * pt_min
        final = final[hard_enough]
        owner = None if owner is None else owner[hard_enough]
    pid = _numpy(prt.content("id"))[final]
    charge, keep = table.lookup(pid)
    take = final[keep]  # the kept particles' entries: every column is gathered once
    columns = {
        "px": px[take], "py": py[take], "pz": _numpy(momentum.content("pz"))[take],
        "E": _numpy(momentum.content("e"))[take], "pid": pid[keep].astype(np.int32),
        "charge": charge[keep],
    }
    columns.update(_vertices(prt.content("vProd"), take))
    if owner is None:  # entries ascend through the events: count by the events' ends
        ends = np.searchsorted(take, np.concatenate([starts[:1], stops]))
        counts = np.diff(ends)
    else:
        counts = np.bincount(owner[keep], minlength=len(starts))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return FinalState({c: columns[c] for c in COLUMNS}, offsets,
                      record_history(prt, starts, stops, _numpy))


def _vertices(vertex: ak.contents.Content, take: np.ndarray,
              names: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """Production vertex (x, y, z; with ``names``, any of its fields px, py, pz, e) of
    entries ``take``; the origin where Pythia set none."""
    names = names or {"vx": "px", "vy": "py", "vz": "pz"}
    if isinstance(vertex, ak.contents.IndexedOptionArray):
        index = np.asarray(vertex.index.data)[take]
        has = index >= 0
        out = {}
        for name, field in names.items():
            column = np.zeros(len(take))
            column[has] = _numpy(vertex.content.content(field))[index[has]]
            out[name] = column
        return out
    if vertex.is_option:
        flat = ak.Array(vertex)[take]
        return {n: ak.to_numpy(ak.fill_none(flat[f], 0.0)) for n, f in names.items()}
    return {n: _numpy(vertex.content(f))[take] for n, f in names.items()}

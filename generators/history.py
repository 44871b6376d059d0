"""What a realization's event record says beyond its final state, read before it is dropped.

``nextBatch`` hands over each realization's full Pythia record; resim keeps the visible
final state (:mod:`.final_state`) and, from the same record, three small tables per event
(:class:`History`) that make per-jet truth:

* **Heavy-flavour hadrons.** Weakly-decaying B hadrons (containing a b quark, none of their
  daughters a B hadron; b b̄ quarkonia excluded) and C hadrons (a c quark and no b, none of
  their daughters a C hadron, not from a B-hadron decay), with pT > :data:`HADRON_PT_MIN`,
  and whether each comes *from a gluon splitting*: from the hadron up its decay chain to the
  primary hadron of string fragmentation, to the heavy quark among that string's partons,
  then up through the quark's copies (recoils, emissions) to where it was made — a
  parton-shower branching (ISR or FSR, status 41–59) of a gluon, rather than the hard
  process, an MPI scattering or a beam remnant.
* **The first branching of every hard-process gluon** (status 23): down through its copies
  to the first branching it takes part in — g → g g (21) or g → q q̄ (the quark flavour).
  Pythia's showers are ordered in pT, so this is the hardest branching of its line. (In the
  Vincia antenna shower both partners of an antenna share the products of its branchings;
  there it is the first antenna branching the gluon is part of.)
* **The decay products of every hard-process resonance** (status 22: t, W, Z, H) *as this
  realization made them*: the final copy of the resonance after its own radiation and
  recoils (a top can radiate a hard gluon before it decays, which moves its b and W), its
  quarks and gluons as they leave the decay, and its charged leptons after their QED
  radiation, as JetClass's truth matching takes them (jet-universe/jetclass_generation,
  ``makeNtuples.C``). Containment (``[objects] contained``) is judged on these.

Everything is columnar: the candidates are the few heavy hadrons, hard gluons and
resonances of a batch, and their ancestry is walked for all of them at once, one generation
per step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import awkward as ak
import numpy as np

from resim.ranges import ranges

B, C = 5, 4
#: Heavy hadrons below this pT (GeV) are not kept (as in ATLAS's flavour labels): a soft B
#: or C hadron from the underlying event does not make a jet heavy-flavour.
HADRON_PT_MIN = 5.0
G_GG = 21  # first-branching code of g -> g g (quark flavours 1-5 for g -> q qbar)

_GLUON = 21
_RESONANCES = (6, 23, 24, 25)
_PARTONS = (1, 2, 3, 4, 5, 21)
_LEPTONS = (11, 13, 15)
#: Longest ancestry walked (generations); real chains are far shorter.
_MAX_STEPS = 500
_MAX_DECAY_DEPTH = 8


def _in(status: np.ndarray, lo: int, hi: int) -> np.ndarray:
    s = np.abs(status)
    return (s >= lo) & (s <= hi)


def heavy_flavour(pid: np.ndarray) -> np.ndarray:
    """5 for B hadrons, 4 for C hadrons (c and no b), 0 for anything else (leptons, partons,
    diquarks, light hadrons, and b b̄ / c c̄ quarkonia, whose flavour is hidden)."""
    m = np.abs(np.asarray(pid, np.int64)) % 10000  # drop the excitation digits (10411 -> 411)
    q1, q2, q3 = (m // 1000) % 10, (m // 100) % 10, (m // 10) % 10
    hadron = (q2 > 0) & (q3 > 0) & ~((q1 == 0) & (q2 == q3))
    has_b = (q1 == B) | (q2 == B) | (q3 == B)
    has_c = (q1 == C) | (q2 == C) | (q3 == C)
    return np.where(hadron, np.where(has_b, B, np.where(has_c, C, 0)), 0).astype(np.int8)


def _daughters(d1: np.ndarray, d2: np.ndarray, first: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Global rows of the daughters of entries with daughter indices (d1, d2), and the entry
    each belongs to. Pythia's convention: d1 = 0 none; d2 = 0 or d2 = d1 only d1; d2 > d1 the
    range d1 ... d2; 0 < d2 < d1 the two entries d1 and d2 (Vincia's antennae make those)."""
    length = np.where(d1 <= 0, 0, np.where(d2 > d1, d2 - d1 + 1, np.where(d2 > 0, 2, 1)))
    rows, which = ranges(first + d1, length)
    pair = (d2[which] > 0) & (d2[which] < d1[which])
    second = pair & (rows != first[which] + d1[which])
    rows[second] = first[which[second]] + d2[which[second]]
    return rows, which


def _per_event(event: np.ndarray, n_events: int) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(np.bincount(event, minlength=n_events))]).astype(
        np.int64)


@dataclass
class History:
    """Per event, flat: event ``i`` owns rows ``offsets[i]:offsets[i+1]`` of each table.

    * ``hadrons``: ``px, py, pz, E`` (GeV), ``flavour`` (5 or 4), ``from_splitting``;
    * ``gluons``: ``index`` (the hard gluon's position in the event record), ``branching``
      (21 for g → g g, the quark flavour 1–5 for g → q q̄, 0 if it never branched);
    * ``products``: ``index`` (the hard resonance's position in the record), ``eta``,
      ``phi`` of each of its decay quarks, gluons and charged leptons.
    """

    hadrons: dict[str, np.ndarray]
    gluons: dict[str, np.ndarray]
    products: dict[str, np.ndarray]
    offsets: dict[str, np.ndarray]

    #: Columns and types of the three tables.
    TABLES: ClassVar[dict[str, dict[str, type]]] = {
        "hadrons": {"px": np.float64, "py": np.float64, "pz": np.float64, "E": np.float64,
                    "flavour": np.int8, "from_splitting": bool},
        "gluons": {"index": np.int32, "branching": np.int8},
        "products": {"index": np.int32, "eta": np.float64, "phi": np.float64},
    }

    @classmethod
    def empty(cls, n_events: int) -> History:
        tables: list[dict[str, np.ndarray]] = [{c: np.zeros(0, t) for c, t in cols.items()}
                                               for cols in cls.TABLES.values()]
        hadrons, gluons, products = tables
        return cls(hadrons, gluons, products,
                   {name: np.zeros(n_events + 1, np.int64) for name in cls.TABLES})

    @classmethod
    def concatenate(cls, parts: list[History]) -> History:
        def offsets(name: str) -> np.ndarray:
            sizes = np.cumsum([0] + [p.offsets[name][-1] for p in parts[:-1]])
            return np.concatenate([[0]] + [p.offsets[name][1:] + s
                                           for p, s in zip(parts, sizes, strict=True)])

        hadrons, gluons, products = (
            {c: np.concatenate([getattr(p, name)[c] for p in parts]) for c in cols}
            for name, cols in cls.TABLES.items())
        return cls(hadrons, gluons, products,
                   {name: offsets(name).astype(np.int64) for name in cls.TABLES})

    def take(self, events: np.ndarray) -> History:
        """Events ``events`` (in that order, repeats allowed) as a new History."""
        events = np.asarray(events, np.int64)
        tables, offsets = [], {}
        for name, cols in self.TABLES.items():
            start = self.offsets[name][events]
            n = self.offsets[name][events + 1] - start
            rows, _ = ranges(start, n)
            tables.append({c: getattr(self, name)[c][rows] for c in cols})
            offsets[name] = np.concatenate([[0], np.cumsum(n)]).astype(np.int64)
        hadrons, gluons, products = tables
        return History(hadrons, gluons, products, offsets)

    def lookup(self, table: str, rows: np.ndarray, index: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        """Entries of ``table`` (``gluons`` or ``products``) of events ``rows`` whose record
        ``index`` is the given one: (entry, which query) pairs."""
        start = self.offsets[table][rows]
        entry, which = ranges(start, self.offsets[table][rows + 1] - start)
        hit = getattr(self, table)["index"][entry] == np.asarray(index)[which]
        return entry[hit], which[hit]


class _Record:
    """The columns of a ``nextBatch`` particle record that the walks need, flat."""

    def __init__(self, prt: ak.contents.RecordArray, numpy):
        self.id = numpy(prt.content("id"))
        self.status = numpy(prt.content("status"))
        self.mother1 = numpy(prt.content("mother1"))
        self.mother2 = numpy(prt.content("mother2"))
        self.daughter1 = numpy(prt.content("daughter1"))
        self.daughter2 = numpy(prt.content("daughter2"))
        self._p = prt.content("p")
        self._numpy = numpy

    def momentum(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        return {name: self._numpy(self._p.content(field))[rows]
                for name, field in (("px", "px"), ("py", "py"), ("pz", "pz"), ("E", "e"))}


def record_history(prt: ak.contents.RecordArray, starts: np.ndarray, stops: np.ndarray,
                   numpy) -> History:
    """The :class:`History` of the events whose records are the entries ``[starts[i],
    stops[i])`` of the flat particle columns ``prt`` (``numpy`` reads a column)."""
    n = len(starts)
    if n == 0:
        return History.empty(0)
    rec = _Record(prt, numpy)
    lo, hi = int(starts.min()), int(stops.max())
    ids = rec.id[lo:hi]
    # Cheap cuts first (this runs on every entry of every record): heavy hadrons have 4xx/5xx
    # meson or 4xxx/5xxx baryon codes (possibly with excitation digits in front), and the
    # pions, kaons, photons and partons that fill the record are below 400.
    big = lo + np.flatnonzero((ids >= 400) | (ids <= -400))
    m = np.abs(rec.id[big]) % 10000
    hadron = big[((m >= 400) & (m < 600)) | ((m >= 4000) & (m < 6000))]
    gluon = lo + np.flatnonzero(ids == _GLUON)
    gluon = gluon[_in(rec.status[gluon], 23, 23)]
    resonance = lo + np.flatnonzero(_in(rec.status[lo:hi], 22, 22))
    resonance = resonance[np.isin(np.abs(rec.id[resonance]), _RESONANCES)]
    hadrons, h_event = _heavy_hadrons(rec, *_owned(hadron, starts, stops))
    gluons, g_event = _first_branchings(rec, *_owned(gluon, starts, stops))
    products, p_event = _decay_products(rec, *_owned(resonance, starts, stops))
    return History(hadrons, gluons, products,
                   {"hadrons": _per_event(h_event, n), "gluons": _per_event(g_event, n),
                    "products": _per_event(p_event, n)})


def _owned(rows: np.ndarray, starts: np.ndarray, stops: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``rows`` that lie in some event, the event of each, and that event's first row
    (record indices are local to their event: global row = first + local index)."""
    order = np.argsort(starts, kind="stable")
    at = np.searchsorted(starts[order], rows, "right") - 1
    event = order[np.maximum(at, 0)]
    ok = (at >= 0) & (rows < stops[event])
    return rows[ok], event[ok], starts[event[ok]]


def _heavy_hadrons(rec: _Record, rows: np.ndarray, event: np.ndarray, first: np.ndarray
                   ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    flavour = heavy_flavour(rec.id[rows])
    keep = flavour > 0
    rows, event, first, flavour = rows[keep], event[keep], first[keep], flavour[keep]
    # Weakly decaying: no daughter of the same flavour (B* -> B gamma, D* -> D pi are not).
    daughter, which = _daughters(rec.daughter1[rows], rec.daughter2[rows], first)
    same = heavy_flavour(rec.id[daughter]) == flavour[which]
    weak = np.bincount(which[same], minlength=len(rows)) == 0
    # Soft ones are never associated with a jet: drop them before walking their ancestry.
    p = rec.momentum(rows)
    keep = weak & (np.hypot(p["px"], p["py"]) > HADRON_PT_MIN)
    rows, event, first, flavour = rows[keep], event[keep], first[keep], flavour[keep]

    # Up the decay chain (status 91-99: decay products) to the primary hadron.
    primary = rows.copy()
    from_b = np.zeros(len(rows), bool)
    for _ in range(_MAX_STEPS):
        up = _in(rec.status[primary], 91, 99) & (rec.mother1[primary] > 0)
        if not up.any():
            break
        primary[up] = first[up] + rec.mother1[primary[up]]
        from_b |= up & (heavy_flavour(rec.id[primary]) == B)
    keep = ~((flavour == C) & from_b)  # C hadrons from B decays belong to the B
    rows, event, first, flavour, primary = (a[keep] for a in (rows, event, first, flavour,
                                                               primary))

    # The heavy quark among the primary hadron's string partons (mother1 ... mother2).
    m1, m2 = rec.mother1[primary], rec.mother2[primary]
    n = np.where(_in(rec.status[primary], 81, 89) & (m1 > 0), np.maximum(m1, m2) - m1 + 1, 0)
    parton, which = ranges(first + m1, n)
    heavy = np.abs(rec.id[parton]) == flavour[which]
    quark = np.full(len(rows), -1, np.int64)
    quark[which[heavy][::-1]] = parton[heavy][::-1]  # the first heavy quark of each string
    splitting = np.zeros(len(rows), bool)
    has = quark >= 0
    splitting[has] = _from_gluon_splitting(rec, quark[has], first[has])

    columns = rec.momentum(rows)
    columns.update(flavour=flavour, from_splitting=splitting)
    return columns, event


def _from_gluon_splitting(rec: _Record, quark: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Whether each quark (global rows) was made in a shower branching of a gluon: up through
    its copies (a mother with its own id) to where it appears, then look at that mother.
    The climb stops at the hard process and at MPI scatterings (status 21-39): an outgoing
    b there has the incoming b as its mother, which came from the proton, not from the jet."""
    q = quark.copy()
    for _ in range(_MAX_STEPS):
        m1, m2 = rec.mother1[q], rec.mother2[q]
        climb = ~_in(rec.status[q], 21, 39)
        same1 = climb & (m1 > 0) & (rec.id[first + m1] == rec.id[q])
        same2 = climb & ~same1 & (m2 > 0) & (rec.id[first + m2] == rec.id[q])
        if not (same1 | same2).any():
            break
        q = np.where(same1, first + m1, np.where(same2, first + m2, q))
    m1, m2 = rec.mother1[q], rec.mother2[q]
    gluon_parent = (((m1 > 0) & (rec.id[first + m1] == _GLUON))
                    | ((m2 > 0) & (rec.id[first + m2] == _GLUON)))
    return _in(rec.status[q], 41, 59) & gluon_parent


def _first_branchings(rec: _Record, rows: np.ndarray, event: np.ndarray, first: np.ndarray
                      ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    index = (rows - first).astype(np.int32)
    branching = np.zeros(len(rows), np.int8)
    g = rows.copy()
    active = np.ones(len(rows), bool)
    for _ in range(_MAX_STEPS):
        if not active.any():
            break
        d1, d2 = rec.daughter1[g], rec.daughter2[g]
        # A single daughter that is still a gluon is a copy (recoil, colour reconnection):
        # follow it. Two or more daughters are a branching. Anything else (the gluon went
        # into a string unbranched) ends the walk with 0.
        single = (d1 > 0) & ((d2 == 0) | (d2 == d1))
        split = active & (d1 > 0) & ~single
        if split.any():
            daughter, which = _daughters(d1[split], d2[split], first[split])
            branching[np.flatnonzero(split)] = _classify(rec.id[daughter], which,
                                                         int(split.sum()))
        nxt = first + d1
        active &= single & (rec.id[nxt] == _GLUON)
        g = np.where(active, nxt, g)
    return {"index": index, "branching": branching}, event


def _classify(pid: np.ndarray, which: np.ndarray, n: int) -> np.ndarray:
    """The branching that made each of ``n`` sets of daughters (``pid``, set ``which``): the
    flavour of a q q̄ pair among them (the heaviest if several), else 21 for two or more
    gluons, else 0."""
    quark = (pid >= 1) & (pid <= 5)
    anti = (pid <= -1) & (pid >= -5)
    bits_q = np.zeros(n, np.int64)
    bits_a = np.zeros(n, np.int64)
    np.bitwise_or.at(bits_q, which[quark], np.left_shift(1, pid[quark].astype(np.int64)))
    np.bitwise_or.at(bits_a, which[anti], np.left_shift(1, -pid[anti].astype(np.int64)))
    pair = bits_q & bits_a
    flavour = np.zeros(n, np.int64)
    for f in range(1, 6):  # the heaviest pair wins
        flavour[(pair >> f) & 1 == 1] = f
    gluons = np.bincount(which[pid == _GLUON], minlength=n)
    return np.where(flavour > 0, flavour, np.where(gluons >= 2, G_GG, 0)).astype(np.int8)


def _final_copy(rec: _Record, rows: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Each entry's last copy: down through daughters with its own id (recoils, emissions
    off it: t -> t g, mu -> mu gamma) until none has."""
    r = rows.copy()
    active = np.flatnonzero(np.ones(len(r), bool))
    for _ in range(_MAX_STEPS):
        if not len(active):
            break
        d, which = _daughters(rec.daughter1[r[active]], rec.daughter2[r[active]],
                              first[active])
        same = rec.id[d] == rec.id[r[active]][which]
        nxt = np.full(len(active), -1, np.int64)
        nxt[which[same][::-1]] = d[same][::-1]
        moved = nxt >= 0
        r[active[moved]] = nxt[moved]
        active = active[moved]
    return r


def _decay_products(rec: _Record, rows: np.ndarray, event: np.ndarray, first: np.ndarray
                    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Decay quarks, gluons and (final) charged leptons of each resonance, through any
    chain of resonance decays (t -> b W, W -> q q')."""
    # Only the hard process's own resonances: a W from a top's decay is reached through it.
    top = ~np.isin(np.abs(rec.id[first + rec.mother1[rows]]), _RESONANCES)
    rows, event, first = rows[top], event[top], first[top]
    owner = np.arange(len(rows))
    front = _final_copy(rec, rows, first)
    found, by = [], []
    for _ in range(_MAX_DECAY_DEPTH):
        if not len(front):
            break
        d, which = _daughters(rec.daughter1[front], rec.daughter2[front], first[owner])
        own = owner[which]
        aid = np.abs(rec.id[d])
        parton, lepton = np.isin(aid, _PARTONS), np.isin(aid, _LEPTONS)
        found += [d[parton], _final_copy(rec, d[lepton], first[own[lepton]])]
        by += [own[parton], own[lepton]]
        resonance = np.isin(aid, _RESONANCES)
        owner = own[resonance]
        front = _final_copy(rec, d[resonance], first[owner])
    row = np.concatenate(found) if found else np.zeros(0, np.int64)
    obj = np.concatenate(by) if by else np.zeros(0, np.int64)
    order = np.argsort(obj, kind="stable")  # products grouped by resonance, events ascending
    row, obj = row[order], obj[order]
    p = rec.momentum(row)
    pt = np.hypot(p["px"], p["py"])
    return {"index": (rows - first)[obj].astype(np.int32),
            "eta": np.arcsinh(p["pz"] / np.maximum(pt, 1e-12)),
            "phi": np.arctan2(p["py"], p["px"])}, event[obj]

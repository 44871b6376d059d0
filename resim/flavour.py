"""Per-jet flavour: the heavy-flavour hadrons in a jet and the gluon splitting it shows.

A group's label is its frozen hard parton (``b``, ``c``, ``light``, ``g`` with the
``qcdflavour`` card): the same for every realization. What the shower made of it is not —
whether a gluon splits into b b̄ or c c̄, or first into two gluons or two light quarks,
differs between realizations of one group — so it is stored per jet, from the realization's
own event record (:mod:`resim.generators.history`):

* ``n_b_hadrons``, ``n_c_hadrons``: weakly-decaying B and C hadrons (pT > 5 GeV; C hadrons
  from B decays not counted) within the jet radius of the jet axis, ΔR in rapidity and
  azimuth as FastJet measures it — ATLAS's cone labelling with the jet's own radius, which
  for these hard, round anti-kt jets agrees with ghost association. A hadron near two jets
  counts for both.
* ``splitting`` (:data:`SPLITTINGS`): ``g_bb`` (5) when one of the jet's B hadrons comes from
  a g → b b̄ shower splitting; else ``g_cc`` (4) for a C hadron from g → c c̄; else, for jets
  of a hard gluon, ``g_qq`` (1) or ``g_gg`` (21) by the gluon's first branching (g → q q̄ of
  any flavour, or g → g g); ``none`` (0) otherwise. A ``b`` or ``light`` jet can be ``g_bb``
  too (a gluon it radiated split): the code says what the jet holds, the label what started it.

RS3L's QCD categories are then ``light``, ``c``, ``b`` (labels) and ``g`` split by
``splitting`` into g → qq, g → cc, g → bb, g → gg; ``docs/cards.md`` has the table and
``resim export --classes rs3l`` applies it.
"""

from __future__ import annotations

import numpy as np

from resim.generators.history import G_GG, B, C, History
from resim.ranges import ranges

NONE, G_QQ, G_CC, G_BB = 0, 1, 4, 5
#: Codes of the jets' ``splitting`` column (-1 in files that do not know, e.g. converted
#: benchmarks).
SPLITTINGS = {NONE: "none", G_QQ: "g_qq", G_CC: "g_cc", G_BB: "g_bb", G_GG: "g_gg"}


def _rapidity(p: dict[str, np.ndarray]) -> np.ndarray:
    e = np.maximum(p["E"], np.abs(p["pz"]) + 1e-9)
    return 0.5 * np.log((e + p["pz"]) / (e - p["pz"]))


def jet_flavour(history: History, rows: np.ndarray, jet: dict[str, np.ndarray],
                radius: float, object_index: np.ndarray, object_is_gluon: np.ndarray
                ) -> dict[str, np.ndarray]:
    """Per-jet ``n_b_hadrons``, ``n_c_hadrons`` and ``splitting`` of jets with momenta ``jet``
    (``px, py, pz, E``) from realizations ``rows``, matched to objects at event-record
    position ``object_index`` (gluons where ``object_is_gluon``)."""
    n_jets = len(rows)
    start = history.offsets["hadrons"][rows]
    pair, j = ranges(start, history.offsets["hadrons"][rows + 1] - start)
    h = {c: v[pair] for c, v in history.hadrons.items()}
    jp = {c: jet[c][j] for c in ("px", "py", "pz", "E")}
    d_rap = _rapidity(h) - _rapidity(jp)
    d_phi = np.arctan2(np.abs(h["px"] * jp["py"] - h["py"] * jp["px"]),
                       h["px"] * jp["px"] + h["py"] * jp["py"])
    inside = np.hypot(d_rap, d_phi) < radius
    j, kind, split = j[inside], h["flavour"][inside], h["from_splitting"][inside]

    def count(mask: np.ndarray) -> np.ndarray:
        return np.bincount(j[mask], minlength=n_jets)

    n_b, n_c = count(kind == B), count(kind == C)
    b_split, c_split = count((kind == B) & split) > 0, count((kind == C) & split) > 0

    first = np.zeros(n_jets, np.int8)
    entry, which = history.lookup("gluons", rows, object_index)
    gluon = object_is_gluon[which]
    first[which[gluon]] = history.gluons["branching"][entry[gluon]]
    by_branching = np.where(first == G_GG, G_GG, np.where(first > 0, G_QQ, NONE))
    splitting = np.where(b_split, G_BB, np.where(c_split, G_CC, by_branching))
    return {"n_b_hadrons": np.minimum(n_b, 127).astype(np.int8),
            "n_c_hadrons": np.minimum(n_c, 127).astype(np.int8),
            "splitting": splitting.astype(np.int8)}

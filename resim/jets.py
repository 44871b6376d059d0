"""Jets of realizations: cluster, select, match to truth objects, collect constituents.

All realizations of a block are clustered in one call of FastJet's multi-event awkward
interface, straight from the flat particle columns (no copy); the constituents of the
chosen jets are gathered with numpy from FastJet's constituent indices. A selected jet
(card ``[jets]`` pT window and |η|) belongs to the group of the truth object it matches:
each object takes its nearest jet within the matching radius; a jet claimed by two
objects goes to the nearer one. With ``[objects] contained = true`` every quark, gluon and
charged lepton from the object's decay must also lie within the radius — the decay products
as the realization made them (its record's, :mod:`resim.generators.history`: a top that
radiated before decaying moved its b and W), else the frozen hard process's. Each jet also
gets its heavy-flavour content and gluon splitting (:mod:`resim.flavour`): facts of the
realization, unlike the group's label.

With a detector, the same is done for its candidates: detector-level jets are matched to
the same truth objects and join the same groups. The result is plain numpy columns, jets
ordered by (group, level, variation, realization) so that all jets of a group are
contiguous, constituents ordered by decreasing pT.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import fastjet
import numpy as np
import vector

from resim.card import Jets
from resim.flavour import jet_flavour
from resim.generators.final_state import FinalState
from resim.generators.history import History
from resim.layout import DETECTOR, PARTICLE, with_derived
from resim.ranges import ranges
from resim.truth import TruthObjects

P4 = ("px", "py", "pz", "E")
_ALGORITHMS = {
    "antikt": fastjet.antikt_algorithm,
    "kt": fastjet.kt_algorithm,
    "cambridge": fastjet.cambridge_algorithm,
}


def jet_definition(spec: Jets) -> fastjet.JetDefinition:
    return fastjet.JetDefinition(_ALGORITHMS[spec.algorithm], spec.radius)


@dataclass
class ClusteredJets:
    """A block's jets as columns for the output tables: one row per jet, constituent and
    group."""

    jets: dict[str, np.ndarray]
    constituents: dict[str, np.ndarray]
    groups: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.jets["pt"])


def _first_of_each(keys: tuple[np.ndarray, ...]) -> np.ndarray:
    """Mask of the first row of each run of equal keys (rows already sorted by keys)."""
    first = np.ones(len(keys[0]), bool)
    if len(first) > 1:
        first[1:] = np.any([k[1:] != k[:-1] for k in keys], axis=0)
    return first


def make_jets(particles: FinalState, jobs: dict[str, np.ndarray], truth: TruthObjects,
              spec: Jets, contained: bool, candidates: FinalState | None = None,
              n_pileup: np.ndarray | None = None) -> ClusteredJets:
    """Cluster ``particles`` (one event per realization, in ``jobs`` order) into grouped
    jets; with ``candidates`` (the detector's, same order) detector-level jets too, their
    realizations with ``n_pileup`` pileup collisions (default none)."""
    levels = [_matched_jets(particles, jobs, truth, spec, contained, PARTICLE)]
    if candidates is not None:
        pileup = np.zeros(len(candidates), np.int64) if n_pileup is None else n_pileup
        levels.append(_matched_jets(candidates, {**jobs, "n_pileup": pileup}, truth, spec,
                                    contained, DETECTOR))
    jet_cols = {k: np.concatenate([lv[0][k] for lv in levels]) for k in levels[0][0]}
    shared = [k for k in levels[0][1] if all(k in lv[1] for lv in levels)]
    constituents = {k: np.concatenate([lv[1][k] for lv in levels]) for k in shared}
    obj = np.concatenate([lv[2] for lv in levels])

    # Jets ordered by (group, level, variation, realization): a group is contiguous.
    out = np.lexsort((jet_cols["realization"], jet_cols["variation"], jet_cols["level"],
                      jet_cols["group"]))
    n = jet_cols["n_constituents"]
    take, _ = ranges((np.cumsum(n) - n)[out], n[out])
    jet_cols = {k: v[out] for k, v in jet_cols.items()}
    constituents = {k: v[take] for k, v in constituents.items()}
    group, obj = jet_cols["group"], obj[out]

    g_first = np.flatnonzero(_first_of_each((group,)))
    g_obj = obj[g_first]
    tp4 = cast(vector.MomentumNumpy4D, truth.p4[g_obj])  # vector types a take loosely
    group_cols = {
        "group": group[g_first], "event": truth.event[g_obj], "object": truth.index[g_obj],
        "label": truth.label[g_obj], "pid": truth.pid[g_obj],
        "pt": tp4.pt, "eta": tp4.eta, "phi": tp4.phi, "mass": tp4.mass,
        "n_jets": np.diff(np.append(g_first, len(group))),
    }
    return ClusteredJets(jets=jet_cols, constituents=constituents, groups=group_cols)


def _matched_jets(particles: FinalState, jobs: dict[str, np.ndarray], truth: TruthObjects,
                  spec: Jets, contained: bool, level: int
                  ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
    """Jets of one level matched to truth objects: (jet columns, constituents, object row
    of each jet), jets in no particular order."""
    cs = fastjet.ClusterSequence(particles.momenta(), jet_definition(spec))
    # FastJet's answer is one list of jets per realization, flat columns underneath.
    jets = cs.inclusive_jets(min_pt=spec.pt_min).layout
    offsets = np.asarray(jets.offsets.data)
    row = np.repeat(np.arange(len(jets)), np.diff(offsets))
    p4 = cast(vector.MomentumNumpy4D, vector.array(
        {c: np.asarray(jets.content.content(c).data)[offsets[0]:offsets[-1]] for c in P4}))
    selected = np.flatnonzero((p4.pt < spec.pt_max) & (np.abs(p4.eta) < spec.abs_eta_max))

    # Candidate (jet, object) pairs: every selected jet with every object of its event.
    order = np.argsort(truth.event, kind="stable")
    t_event = truth.event[order]
    event = jobs["event"][row[selected]]
    start = np.searchsorted(t_event, event, "left")
    n_obj = np.searchsorted(t_event, event, "right") - start
    pair_obj_sorted, pair_jet_pos = ranges(start, n_obj)
    pair_jet = selected[pair_jet_pos]
    pair_obj = order[pair_obj_sorted]
    dr = p4[pair_jet].deltaR(truth.p4[pair_obj])
    near = dr < spec.match_dr
    pair_jet, pair_obj, dr = pair_jet[near], pair_obj[near], dr[near]

    # Each object (per realization) takes its nearest jet; a jet claimed twice goes to
    # the nearer object.
    by_obj = np.lexsort((dr, pair_obj, row[pair_jet]))
    best = by_obj[_first_of_each((row[pair_jet][by_obj], pair_obj[by_obj]))]
    by_jet = best[np.lexsort((dr[best], pair_jet[best]))]
    match = by_jet[_first_of_each((pair_jet[by_jet],))]
    m_jet, m_obj = pair_jet[match], pair_obj[match]

    if contained and len(m_jet):
        m_jet, m_obj = _contained(m_jet, m_obj, row[m_jet], p4, truth, particles.history,
                                  spec.radius)

    m_row = row[m_jet]
    constituents, n_const = _constituents(particles, cs, spec.pt_min, m_row, m_jet)
    constituents = with_derived("constituents", constituents)
    jp4 = cast(vector.MomentumNumpy4D, p4[m_jet])
    jet_cols = {
        "pt": jp4.pt, "eta": jp4.eta, "phi": jp4.phi, "mass": jp4.mass,
        "n_constituents": n_const, "group": truth.group[m_obj], "event": jobs["event"][m_row],
        "variation": jobs["variation"][m_row], "realization": jobs["realization"][m_row],
        "seed": jobs["seed"][m_row], "label": truth.label[m_obj],
        "level": np.full(len(m_jet), level, np.int8),
        "n_pileup": jobs["n_pileup"][m_row] if "n_pileup" in jobs else np.zeros(len(m_jet)),
        **jet_flavour(particles.history, m_row, {c: getattr(jp4, c) for c in P4},
                      spec.radius, truth.record_index[m_obj], np.abs(truth.pid[m_obj]) == 21),
    }
    return jet_cols, constituents, m_obj


def _contained(m_jet: np.ndarray, m_obj: np.ndarray, m_row: np.ndarray,
               p4: vector.MomentumNumpy4D, truth: TruthObjects, history: History,
               radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Keep matches whose object's decay quarks, gluons and charged leptons all lie within
    ``radius``: as the realization made them (``history``), where its record has them,
    else as the frozen hard process has them."""
    entry, pair = history.lookup("products", m_row, truth.record_index[m_obj])
    own = np.bincount(pair, minlength=len(m_jet)) > 0
    start = np.searchsorted(truth.daughter_object, m_obj, "left")
    n = np.searchsorted(truth.daughter_object, m_obj, "right") - start
    n[own] = 0
    daughter, frozen = ranges(start, n)
    pair = np.concatenate([pair, frozen])
    eta = np.concatenate([history.products["eta"][entry], truth.daughter_eta[daughter]])
    phi = np.concatenate([history.products["phi"][entry], truth.daughter_phi[daughter]])
    jet = p4[m_jet[pair]]
    d_phi = (jet.phi - phi + np.pi) % (2 * np.pi) - np.pi
    worst = np.zeros(len(m_jet))
    np.maximum.at(worst, pair, np.hypot(jet.eta - eta, d_phi))
    ok = worst < radius
    return m_jet[ok], m_obj[ok]


def _constituents(particles: FinalState, cs: fastjet.ClusterSequence, pt_min: float,
                  rows: np.ndarray, jets: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Constituents of the chosen jets (``jets``: positions among all clustered jets of the
    block, ``rows``: their realizations), flattened, by decreasing pT within each jet."""
    # FastJet's answer is jagged twice (realization → jet → particle index within the
    # realization); the chosen jets' index lists are ranges of its flat content.
    index = cs.constituent_index(min_pt=pt_min).layout
    per_jet = np.asarray(index.content.offsets.data)[index.offsets.data[0]:]
    local = np.asarray(index.content.content.data)
    start, stop = per_jet[jets], per_jet[jets + 1]
    n = (stop - start).astype(np.int32)
    jet_of = np.repeat(np.arange(len(jets)), n)
    at = np.arange(n.sum()) + np.repeat(start - (np.cumsum(n) - n), n)
    take = local[at] + particles.offsets[rows][jet_of]
    cols = {f: c[take] for f, c in particles.columns.items()}
    by_pt = np.lexsort((-(cols["px"] * cols["px"] + cols["py"] * cols["py"]), jet_of))
    return {f: c[by_pt] for f, c in cols.items()}, n

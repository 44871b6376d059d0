"""Jet substructure of exported jets: soft-drop mass and N-subjettiness, as JetClass has.

JetClass's ``jet_sdmass`` and ``jet_tau1..4`` come from Delphes' FastJetFinder with its
card's settings (jet-universe/jetclass_generation ``delphes_card.tcl``: soft drop with
β = 0, z_cut = 0.1, R0 = 0.8; N-subjettiness with β = 1). resim computes them with the same
fjcontrib classes through FastJet's Python interface, on each jet's own constituents:

* **soft-drop mass**: the jet reclustered with Cambridge/Aachen and groomed with SoftDrop
  (β = 0, z_cut = 0.1, R0 = the jet radius) — the modified mass-drop tagger;
* **τ1 … τ4**: fjcontrib's Nsubjettiness with one-pass kT axes and the normalized measure
  (β = 1, R0 = the jet radius), τ_N = Σ_k pT_k min_i ΔR_ik / (Σ_k pT_k R0).

All jets of a block are clustered in one call of FastJet's multi-event interface (each jet
is one "event"), so nothing loops over jets in Python.
"""

from __future__ import annotations

import contextlib
import os

import awkward as ak
import fastjet
import numpy as np

from ..generators.pythia_setup import stdout_to

#: Soft-drop parameters (Delphes' SoftDrop settings in JetClass's card).
SOFTDROP_BETA, SOFTDROP_ZCUT = 0.0, 0.1
#: N-subjettiness exponent and the subjet counts exported.
NSUB_BETA, NSUB_N = 1.0, (1, 2, 3, 4)
#: Cambridge/Aachen with a radius beyond any jet: every constituent ends in one jet.
_RECLUSTER = fastjet.JetDefinition(fastjet.cambridge_algorithm, 10.0)
_clustered: list[bool] = []  # non-empty once this process has clustered (banner shown)


def substructure(px: np.ndarray, py: np.ndarray, pz: np.ndarray, energy: np.ndarray,
                 counts: np.ndarray, radius: float) -> dict[str, np.ndarray]:
    """``sdmass`` and ``tau1`` … ``tau4`` of jets whose constituents are the flat columns
    (``counts[i]`` rows for jet i)."""
    n = len(counts)
    if n == 0:
        return {"sdmass": np.zeros(0), **{f"tau{k}": np.zeros(0) for k in NSUB_N}}
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    record = ak.contents.RecordArray(
        [ak.contents.NumpyArray(np.ascontiguousarray(c, np.float64))
         for c in (px, py, pz, energy)], ["px", "py", "pz", "E"])
    jets = ak.Array(ak.contents.ListOffsetArray(ak.index.Index64(offsets), record))
    # FastJet prints its banner on the first clustering of a process, to standard output;
    # here that would land in the middle of `resim export`'s own output.
    with stdout_to(os.devnull) if not _clustered else contextlib.nullcontext():
        cs = fastjet.ClusterSequence(jets, _RECLUSTER)
        groomed = cs.exclusive_jets_softdrop_grooming(njets=1, beta=SOFTDROP_BETA,
                                                      symmetry_cut=SOFTDROP_ZCUT, R0=radius)
        taus = ak.to_numpy(cs.njettiness(njets=list(NSUB_N), beta=NSUB_BETA, R0=radius))
    _clustered.append(True)
    return {"sdmass": ak.to_numpy(groomed.msoftdrop).astype(np.float64),
            **{f"tau{k}": taus[:, i].astype(np.float64) for i, k in enumerate(NSUB_N)}}

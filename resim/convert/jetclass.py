"""JetClass ROOT files (Qu, Li, Qian, arXiv:2202.03772) as a resim data set.

Upstream format (the ``particle_transformer`` repository's dataloader, data config and
JetClass101 notebook): one TTree ``tree`` per file, one entry per jet, 100k jets a file.
Jagged ``part_*`` branches per constituent — ``part_px/py/pz/energy`` (GeV),
``part_deta``, ``part_dphi``, ``part_d0val``, ``part_d0err``, ``part_dzval``,
``part_dzerr``, ``part_charge`` (floats) and the particle-type flags
``part_isChargedHadron/NeutralHadron/Photon/Electron/Muon`` (int32); one-hot labels
``label_QCD, label_Hbb, …, label_Tbl`` of mixed types (float, bool, int32); ``jet_*`` and
``aux_*`` floats per jet.

How it maps onto resim's columns (``docs/benchmarks.md`` has the full table):

* jets are detector-level (``level = "detector"``); four-momenta are copied,
  constituents re-ordered by decreasing pT;
* ``d0, dz, d0_err, dz_err`` are ``part_d0val, part_dzval, part_d0err, part_dzerr``:
  Delphes' track D0/DZ and their errors in mm with Delphes' sign,
  ``d0 = (x py − y px)/pT`` at the point of closest approach — the same unit and sign as
  resim's detector; ``kind`` is the set flag (``resim.layout.KINDS``);
* ``pid`` is synthesised from the flags and the charge — 211·q (charged hadron), 130
  (neutral hadron), 22, −11·q (electron), −13·q (muon), 0 if no flag is set — as
  resim's detector writes particle-flow candidates, so resim's particle kind
  (``resim.layout.kind_of``) gives back the flags;
* the production vertex is the track's point of closest approach,
  ``(d0·py/pT, −d0·px/pT, dz)``: resim's straight-line impact parameters
  (``resim.generators.propagation.impact_parameters``) return ``part_d0val`` and
  ``part_dzval`` from it exactly;
* labels are the index of the set ``label_*`` branch in :data:`LABELS`;
* the truth object (``groups`` table) is ``aux_genpart_pid/pt/eta/phi`` where the file
  has those branches (mass 0: JetClass stores none), else a PDG id from the class.

Not carried (resim has no column for them): ``jet_sdmass``, ``jet_tau1..4``.
``part_deta``/``part_dphi`` are not copied but recomputed by resim's features from the
four-momenta, relative to the constituent sum; their convention is JetClass's (Δη
flipped for jets with η ≤ 0). uproot is imported only when converting (``pip install
'resim[formats]'``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from ..layout import kind_of
from .common import ConvertError, JetBlock, check_output, pt_order, write_benchmark

TREE = "tree"
#: Class names, in the order of ParT's JetClass data config (the label index).
LABELS = ("QCD", "Hbb", "Hcc", "Hgg", "H4q", "Hqql", "Zqq", "Wqq", "Tbqq", "Tbl")
LABEL_BRANCHES = tuple(f"label_{c}" for c in LABELS)
FLAGS = ("part_isChargedHadron", "part_isNeutralHadron", "part_isPhoton",
         "part_isElectron", "part_isMuon")
PARTICLE_BRANCHES = ("part_px", "part_py", "part_pz", "part_energy", "part_charge",
                     "part_d0val", "part_dzval", "part_d0err", "part_dzerr", *FLAGS)
REQUIRED = (*PARTICLE_BRANCHES, *LABEL_BRANCHES)
#: Optional truth branches; used only when all are present.
AUX = ("aux_genpart_pid", "aux_genpart_pt", "aux_genpart_eta", "aux_genpart_phi")
#: Truth PDG id per class when the file has no ``aux_genpart_pid``.
CLASS_PID = np.array([0, 25, 25, 25, 25, 25, 23, 24, 6, 6], np.int32)


def synthesise_pid(charge: np.ndarray, charged_hadron: np.ndarray, neutral_hadron: np.ndarray,
                   photon: np.ndarray, electron: np.ndarray, muon: np.ndarray) -> np.ndarray:
    """PDG ids that resim's particle kinds map back onto JetClass's one-hot flags.

    Leptons take the sign of their charge (e⁻ is 11, charge −1); a flag-less particle
    gets 0, which resim classes as a charged or neutral hadron by its charge.
    """
    sign = np.where(np.asarray(charge) < 0, -1, 1)
    return np.select(
        [electron != 0, muon != 0, photon != 0, charged_hadron != 0, neutral_hadron != 0],
        [-11 * sign, -13 * sign, np.full_like(sign, 22), 211 * sign, np.full_like(sign, 130)],
        0,
    ).astype(np.int32)


def vertex_from_impact_parameters(px: np.ndarray, py: np.ndarray, d0: np.ndarray,
                                  dz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The point of closest approach to the beam line of a track with impact parameters
    (d0, dz) and momentum direction (px, py): the vertex a straight track must leave from
    to have exactly those impact parameters."""
    px, py, d0 = (np.asarray(a, np.float64) for a in (px, py, d0))
    pt = np.hypot(px, py)
    safe = np.where(pt > 0, pt, 1.0)
    return (np.where(pt > 0, d0 * py / safe, 0.0), np.where(pt > 0, -d0 * px / safe, 0.0),
            np.asarray(dz, np.float64))


def _uproot():
    try:
        import uproot
    except ImportError as err:  # the core install stays light
        raise ConvertError("reading JetClass ROOT files needs uproot: "
                           "pip install 'resim[formats]'") from err
    return uproot


def _open_tree(path: Path) -> tuple[Any, bool]:
    """The file's ``tree`` (checked for every branch the conversion reads) and whether it
    has the optional truth branches."""
    uproot = _uproot()
    if path.is_dir():
        raise ConvertError(f"{path}: a folder, not a file")
    if not path.is_file():
        raise ConvertError(f"{path}: no such file")
    try:
        tree = uproot.open(path)[TREE]
    except KeyError as err:
        raise ConvertError(f"{path}: no TTree {TREE!r} (not a JetClass file)") from err
    except (OSError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConvertError(f"{path}: not a readable ROOT file ({reason})") from err
    branches = set(tree.keys())
    missing = [b for b in REQUIRED if b not in branches]
    if missing:
        raise ConvertError(f"{path}: not a JetClass file: tree {TREE!r} lacks branches "
                           f"{', '.join(missing)}")
    return tree, all(b in branches for b in AUX)


def _labels(path: Path, arrays: ak.Array, first_entry: int) -> np.ndarray:
    onehot = np.stack([ak.to_numpy(arrays[b]).astype(np.float64) for b in LABEL_BRANCHES],
                      axis=1)
    bad = np.flatnonzero((onehot != 0).sum(axis=1) != 1)
    if bad.size:
        row = onehot[bad[0]]
        raise ConvertError(f"{path}: entry {first_entry + bad[0]}: label_* branches are not "
                           f"one-hot ({dict(zip(LABEL_BRANCHES, row.tolist(), strict=True))})")
    return onehot.argmax(axis=1)


def jetclass_block(path: Path, arrays: ak.Array, first_entry: int, has_aux: bool) -> JetBlock:
    """One block of entries (uproot's awkward arrays) as resim jets."""
    label = _labels(path, arrays, first_entry)
    order = pt_order(np.hypot(arrays["part_px"], arrays["part_py"]))
    counts = ak.to_numpy(ak.num(arrays["part_px"], axis=1)).astype(np.int64)
    p = {b: ak.to_numpy(ak.flatten(arrays[b][order])) for b in PARTICLE_BRANCHES}
    charge = np.rint(p["part_charge"]).astype(np.int8)
    vx, vy, vz = vertex_from_impact_parameters(p["part_px"], p["part_py"], p["part_d0val"],
                                               p["part_dzval"])
    pid = synthesise_pid(charge, *(p[f] for f in FLAGS))
    constituents = {
        "px": p["part_px"], "py": p["part_py"], "pz": p["part_pz"], "E": p["part_energy"],
        "pid": pid, "charge": charge, "vx": vx, "vy": vy, "vz": vz,
        "d0": p["part_d0val"], "dz": p["part_dzval"], "d0_err": p["part_d0err"],
        "dz_err": p["part_dzerr"], "kind": kind_of(pid, charge),
    }
    n = len(label)
    if has_aux:
        truth = {"pid": np.rint(ak.to_numpy(arrays["aux_genpart_pid"])).astype(np.int32),
                 **{k: ak.to_numpy(arrays[f"aux_genpart_{k}"]) for k in ("pt", "eta", "phi")}}
    else:
        truth = {"pid": CLASS_PID[label], **{k: np.zeros(n) for k in ("pt", "eta", "phi")}}
    return JetBlock(counts=counts, constituents=constituents, label=label,
                    truth={**truth, "mass": np.zeros(n)})


def _blocks(trees: list[tuple[Path, Any, bool]], step: int) -> Iterator[JetBlock]:
    for path, tree, has_aux in trees:
        branches = [*REQUIRED, *(AUX if has_aux else ())]
        for arrays, report in tree.iterate(branches, step_size=step, library="ak",
                                           report=True):
            yield jetclass_block(path, arrays, report.tree_entry_start, has_aux)


def convert_jetclass(files: Sequence[str | Path], output: str | Path, *,
                     split: str | None = None, overwrite: bool = False,
                     progress: bool = True, step: int = 25_000) -> dict[str, Any]:
    """Convert JetClass ROOT ``files`` (in order) into one resim data set ``output``.

    Every file is checked before anything is written; ``step`` jets are read at a time.
    Returns the data set's summary (jets per class, ...).
    """
    if not files:
        raise ConvertError("no input files")
    paths, output = [Path(f) for f in files], Path(output)
    check_output(output, overwrite, paths)
    trees = [(p, *_open_tree(p)) for p in paths]
    total = sum(t.num_entries for _, t, _ in trees)
    return write_benchmark(output, _blocks(trees, step), labels=LABELS, source="jetclass",
                           files=paths, total=total, split=split,
                           versions={"uproot_version": _uproot().__version__},
                           progress=progress)

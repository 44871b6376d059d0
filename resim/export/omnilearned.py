"""resim data sets in OmniLearned's custom-data layout (``pip install omnilearned``).

OmniLearned (Bhimji, Harris, Mikuni, Nachman, arXiv 2510.24066) trains on HDF5 files in
``PATH/custom/{train,val,test}/*.h5`` (``omnilearned train --dataset custom --path PATH``;
its ``dataloader.py`` reads ``data``, ``pid`` and ``global`` of each file, one row per jet,
and indexes the files on first use). Each file written here holds:

* ``data`` float32 (N, M, 9), the hardest M constituents (``--max-particles``, zero-padded;
  OmniLearned takes feature 2 ≠ 0 as "a particle"): Δη, Δφ (to the jet axis of *all*
  constituents, Δη flipped for jets at η < 0), log pT, log E (GeV), the particle type
  (:data:`PID_INDEX`, at OmniLearned's default ``--pid-idx 4``), tanh d0, d0 error,
  tanh dz, dz error (mm; the four "additional features", ``--use-add --num-add 4``);
* ``pid`` int64 (N,): the class index (``--num-classes`` = the number of classes, whose
  names are the file's ``classes`` attribute and the manifest's ``classes``);
* ``global`` float32 (N, 4): jet pT, η, mass, and the number of particles in ``data``
  (last, as OmniLearned's generative mode wants it; ``--conditional --num-cond 4``);
* resim's re-simulation keys, which OmniLearned ignores and pair-aware code reads:
  ``group`` (unique over the export), ``event``, ``variation``, ``realization``, ``file``,
  and per jet ``n_b_hadrons``, ``n_c_hadrons``, ``splitting``, ``n_pileup``.

Splits are resim's hard-event splits (every split folder gets one file per input, empty if
the split has none of its jets, so OmniLearned never tries to download a missing data set).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import h5py
import numpy as np

from ..train.features import CHARGED_HADRON, ELECTRON, MUON, NEUTRAL_HADRON, PHOTON
from .common import JET_KEYS, SPLITS, Classes, ExportBlock, OutputDir, Source, export

FOLDER = "custom"
FEATURES = ("deta", "dphi", "log_pt", "log_e", "pid", "tanh_d0", "d0_err", "tanh_dz",
            "dz_err")
GLOBAL = ("pt", "eta", "mass", "n_particles")
KEYS = ("group", "event", "variation", "realization", "file", *JET_KEYS)
#: The particle-type integer: OmniLearned's README maps the experimentally accessible PDG
#: ids in sorted order (-211, -13, -11, 11, 13, 22, 130, 211) to 0 ... 7; here 1 ... 8, since
#: its PID embedding reserves 0 for padding (``padding_idx=0``, ``--pid-dim 9``).
PID_INDEX = {"h-": 1, "mu+": 2, "e+": 3, "e-": 4, "mu-": 5, "photon": 6, "h0": 7, "h+": 8}
_ROW_CHUNK = 256


def pid_index(kind: np.ndarray, charge: np.ndarray) -> np.ndarray:
    """OmniLearned's particle type (:data:`PID_INDEX`) from resim's kind and charge."""
    neg = charge < 0
    return np.select(
        [kind == CHARGED_HADRON, kind == NEUTRAL_HADRON, kind == PHOTON, kind == ELECTRON,
         kind == MUON],
        [np.where(neg, PID_INDEX["h-"], PID_INDEX["h+"]), PID_INDEX["h0"], PID_INDEX["photon"],
         np.where(neg, PID_INDEX["e-"], PID_INDEX["e+"]),
         np.where(neg, PID_INDEX["mu-"], PID_INDEX["mu+"])], 0).astype(np.float32)


def arrays(block: ExportBlock, max_particles: int) -> dict[str, np.ndarray]:
    """The datasets of one block: ``data``, ``pid``, ``global`` and the resim keys."""
    p, x = block.particles, block.x
    m = min(max_particles, p.n_slots)
    mask = p.mask[:, :m]
    data = np.zeros((len(block), max_particles, len(FEATURES)), np.float32)
    data[:, :m] = np.stack([
        x[:, :m, 0], x[:, :m, 1], x[:, :m, 2], x[:, :m, 3],
        pid_index(p.kind[:, :m], p.charge[:, :m]),
        np.tanh(p.d0[:, :m]), block.d0_err[:, :m], np.tanh(p.dz[:, :m]), block.dz_err[:, :m],
    ], axis=-1) * mask[..., None]
    j = block.jets
    glob = np.stack([j["pt"], j["eta"], j["mass"], mask.sum(axis=1)], axis=1)
    return {"data": data, "pid": j["class"].astype(np.int64),
            "global": glob.astype(np.float32), **{k: j[k].astype(np.int64) for k in KEYS}}


class _Files:
    """One HDF5 file per split of an input (empty where the split has none of its jets), its
    datasets grown block by block."""

    def __init__(self, out: OutputDir, source: Source, classes: Classes, max_particles: int):
        self.names = [f"{FOLDER}/{split}/{source.path.stem}.h5" for split in SPLITS]
        self.max_particles = max_particles
        self.files = []
        for name in self.names:
            f = h5py.File(out.path(*name.split("/")), "w")
            f.attrs["classes"] = list(classes.names)
            f.attrs["features"] = list(FEATURES)
            f.attrs["global"] = list(GLOBAL)
            f.attrs["pid_index"] = [f"{k}={v}" for k, v in PID_INDEX.items()]
            shapes = {"data": (max_particles, len(FEATURES)), "global": (len(GLOBAL),)}
            for name_, dtype in (("data", np.float32), ("pid", np.int64),
                                 ("global", np.float32), *((k, np.int64) for k in KEYS)):
                shape = shapes.get(name_, ())
                f.create_dataset(name_, shape=(0, *shape), maxshape=(None, *shape),
                                 dtype=dtype, chunks=(_ROW_CHUNK, *shape))
            self.files.append(f)

    def write(self, split: int, block: ExportBlock) -> None:
        f = self.files[split]
        n = f["pid"].shape[0]
        for name, values in arrays(block, self.max_particles).items():
            f[name].resize(n + len(values), axis=0)
            f[name][n:] = values

    def close(self) -> list[str]:
        for f in self.files:
            f.close()
        return self.names


def export_omnilearned(files: Sequence[str | os.PathLike], output: str | os.PathLike, *,
                       classes: Sequence[str] | None = None, max_particles: int = 128,
                       fractions: Mapping[str, float] | None = None, overwrite: bool = False,
                       progress: bool = True) -> dict[str, Any]:
    """Export resim data sets ``files`` to OmniLearned's layout in directory ``output``
    (``output/custom/{train,val,test}/``); returns the manifest."""

    def writer(out: OutputDir, source: Source, classes: Classes) -> _Files:
        return _Files(out, source, classes, max_particles)

    def finish(out: OutputDir, chosen: Classes, sources: list[Source]) -> dict[str, Any]:
        return {"features": list(FEATURES), "global": list(GLOBAL), "pid_index": PID_INDEX,
                "omnilearned": (f"--dataset {FOLDER} --path {out.target} --num-classes "
                                f"{len(chosen.names)} --use-pid --pid-idx 4 --use-add "
                                "--num-add 4")}

    return export("omnilearned", files, output, classes=classes, max_particles=max_particles,
                  fractions=fractions, overwrite=overwrite, progress=progress, writer=writer,
                  finish=finish, with_substructure=False)

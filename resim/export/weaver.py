"""resim data sets as JetClass-format ROOT files for weaver-core, with a data config.

weaver-core (ParT's training framework, ``weaver/utils/data/fileio.py``) reads ROOT files
through uproot, one TTree per file, one entry per jet. The export writes exactly JetClass's
branches (jet-universe/jetclass_generation ``makeNtuples.C``; ParT's ``JetClass_full.yaml``),
so configs and networks written for JetClass read it unchanged:

* ``part_px, part_py, part_pz, part_energy`` (GeV), ``part_deta``, ``part_dphi`` (to the jet
  axis; Δη flipped for jets at η < 0), ``part_charge``, ``part_isChargedHadron``,
  ``part_isNeutralHadron``, ``part_isPhoton``, ``part_isElectron``, ``part_isMuon``,
  ``part_d0val``, ``part_d0err``, ``part_dzval``, ``part_dzerr`` (mm) — every constituent,
  by decreasing pT; and resim's pileup columns ``part_vertex`` (0 the primary vertex, 1 a
  pileup vertex, -1 none), ``part_weight`` (the mitigation weight the four-momentum
  carries) and ``part_pileup`` (truth: 1 from a pileup collision), not inputs of the data
  config;
* ``jet_pt, jet_eta, jet_phi, jet_energy, jet_nparticles, jet_sdmass, jet_tau1 … jet_tau4``
  (:mod:`.substructure`);
* ``label_<class>``: one-hot over the export's classes (``--classes``; ``jetclass`` gives
  JetClass's ten ``label_QCD … label_Tbl``);
* ``aux_genpart_pid, _pt, _eta, _phi``: the group's truth object, as JetClass names it;
* resim's re-simulation keys, so positive pairs survive: ``aux_group`` (unique over the
  export), ``aux_event``, ``aux_variation`` (index into the manifest's ``variations``),
  ``aux_realization``, ``aux_file`` (index into its ``inputs``), and per jet
  ``aux_n_b_hadrons``, ``aux_n_c_hadrons``, ``aux_splitting`` (codes in ``splittings``),
  ``aux_n_pileup`` (pileup collisions of the jet's realization).

Files: ``DIR/{train,val,test}/<input name>.root`` (TTree ``tree``; a split with no jets of
an input has no file), ``DIR/data_config.yaml`` (weaver's format: ParT's full JetClass input
set — ``pf_points``, ``pf_features``, ``pf_vectors``, ``pf_mask`` — with its
standardization, this export's labels, and the jet and ``aux_`` branches as observers so
predictions keep their group), and ``DIR/resim_export.json`` (the manifest).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import awkward as ak
import numpy as np

from .common import (
    JET_KEYS,
    SPLITS,
    Classes,
    ExportBlock,
    ExportError,
    OutputDir,
    Source,
    export,
)

TREE = "tree"
#: JetClass's particle-type flags, in the order of resim's kinds (resim.train.features.KINDS).
FLAGS = ("part_isChargedHadron", "part_isNeutralHadron", "part_isPhoton", "part_isElectron",
         "part_isMuon")
JET_BRANCHES = ("jet_pt", "jet_eta", "jet_phi", "jet_energy", "jet_nparticles", "jet_sdmass",
                "jet_tau1", "jet_tau2", "jet_tau3", "jet_tau4")
AUX_BRANCHES = ("aux_genpart_pid", "aux_genpart_pt", "aux_genpart_eta", "aux_genpart_phi",
                "aux_group", "aux_event", "aux_variation", "aux_realization", "aux_file",
                "aux_n_b_hadrons", "aux_n_c_hadrons", "aux_splitting", "aux_n_pileup")


def _uproot():
    try:
        import uproot
    except ImportError as err:
        raise ExportError("writing ROOT files needs uproot: pip install 'resim[formats]'") from err
    return uproot


def branches(block: ExportBlock, classes: Classes) -> dict[str, Any]:
    """The TTree entries of one block: jagged ``part_*`` (awkward), flat ``jet_*``,
    ``label_*`` and ``aux_*`` (numpy)."""
    p, x, mask = block.particles, block.x, block.particles.mask
    counts = mask.sum(axis=1)

    def jagged(values: np.ndarray) -> ak.Array:
        return ak.unflatten(np.asarray(values, np.float32)[mask], counts)

    part = {"px": p.px, "py": p.py, "pz": p.pz, "energy": p.energy, "deta": x[..., 0],
            "dphi": x[..., 1], "charge": p.charge,
            **{f[len("part_"):]: p.kind == k for k, f in enumerate(FLAGS)},
            "d0val": p.d0, "d0err": block.d0_err, "dzval": p.dz, "dzerr": block.dz_err,
            **block.pileup}
    j = block.jets
    out: dict[str, Any] = {"part": ak.zip({k: jagged(v) for k, v in part.items()})}
    out.update({
        "jet_pt": j["pt"], "jet_eta": j["eta"], "jet_phi": j["phi"], "jet_energy": j["energy"],
        "jet_nparticles": j["n_particles"], "jet_sdmass": j["sdmass"],
        **{f"jet_tau{k}": j[f"tau{k}"] for k in (1, 2, 3, 4)},
    })
    out = {k: (np.asarray(v, np.float32) if k.startswith("jet_") else v) for k, v in out.items()}
    for k, name in enumerate(classes.names):
        out[f"label_{name}"] = (j["class"] == k).astype(np.int32)
    out.update({
        "aux_genpart_pid": j["truth_pid"].astype(np.float32),
        **{f"aux_genpart_{c}": j[f"truth_{c}"].astype(np.float32) for c in ("pt", "eta", "phi")},
        "aux_group": j["group"], "aux_event": j["event"],
        **{f"aux_{c}": j[c].astype(np.int32) for c in ("variation", "realization", "file",
                                                        *JET_KEYS)},
    })
    if "level" in j:
        out["aux_level"] = j["level"].astype(np.int32)
    return out


def data_config(classes: Classes, max_particles: int, has_level: bool) -> str:
    """weaver's YAML data config: ParT's full JetClass inputs over this export's labels."""
    labels = ", ".join(f"label_{c}" for c in classes.names)
    observers = "\n".join(f"   - {b}" for b in (*JET_BRANCHES, *AUX_BRANCHES,
                                                 *(("aux_level",) if has_level else ())))

    def group(name: str, rows: Sequence[str], pad: str = "wrap") -> str:
        body = "\n".join(f"         - {r}" for r in rows)
        return (f"   {name}:\n      length: {max_particles}\n      pad_mode: {pad}\n"
                f"      vars:\n{body}")

    features = [
        "[part_pt_log, 1.7, 0.7]", "[part_e_log, 2.0, 0.7]", "[part_logptrel, -4.7, 0.7]",
        "[part_logerel, -4.7, 0.7]", "[part_deltaR, 0.2, 4.0]", "[part_charge, null]",
        *(f"[{f}, null]" for f in FLAGS),
        "[part_d0, null]", "[part_d0err, 0, 1, 0, 1]", "[part_dz, null]",
        "[part_dzerr, 0, 1, 0, 1]", "[part_deta, null]", "[part_dphi, null]",
    ]
    return f"""# weaver-core data config written by `resim export --format weaver`.
# Inputs: ParT's full JetClass set (data/JetClass/JetClass_full.yaml in
# jet-universe/particle_transformer) with its standardization; labels: this export's
# classes. Train, e.g.:  weaver --data-train 'DIR/train/*.root' --data-val 'DIR/val/*.root'
#   --data-test 'DIR/test/*.root' --data-config DIR/data_config.yaml
#   --network-config networks/example_ParticleTransformer.py ...
treename: {TREE}

selection:

new_variables:
   part_mask: ak.ones_like(part_energy)
   part_pt: np.hypot(part_px, part_py)
   part_pt_log: np.log(part_pt)
   part_e_log: np.log(part_energy)
   part_logptrel: np.log(part_pt/jet_pt)
   part_logerel: np.log(part_energy/jet_energy)
   part_deltaR: np.hypot(part_deta, part_dphi)
   part_d0: np.tanh(part_d0val)
   part_dz: np.tanh(part_dzval)

preprocess:
   method: manual
   data_fraction: 0.5

inputs:
{group("pf_points", ["[part_deta, null]", "[part_dphi, null]"])}
{group("pf_features", features)}
{group("pf_vectors", [f"[part_{c}, null]" for c in ("px", "py", "pz", "energy")])}
{group("pf_mask", ["[part_mask, null]"], pad="constant")}

labels:
   type: simple
   value: [{labels}]

observers:
{observers}

weights:
"""


class _Trees:
    """One ROOT file per split of an input, created on its first jets."""

    def __init__(self, out: OutputDir, source: Source, classes: Classes):
        self.out, self.stem, self.classes = out, source.path.stem, classes
        self.files: dict[int, Any] = {}

    def write(self, split: int, block: ExportBlock) -> None:
        entries = branches(block, self.classes)
        if split not in self.files:
            f = _uproot().recreate(self.out.path(SPLITS[split], f"{self.stem}.root"))
            # The particle record's fields become flat branches part_px, ... (JetClass's
            # names) sharing one counter, npart.
            f.mktree(TREE, {k: v.type.content if isinstance(v, ak.Array) else v.dtype
                            for k, v in entries.items()},
                     field_name=lambda outer, inner: f"{outer}_{inner}",
                     counter_name=lambda counted: f"n{counted}")
            self.files[split] = f
        self.files[split][TREE].extend(entries)

    def close(self) -> list[str]:
        for f in self.files.values():
            f.close()
        return [f"{SPLITS[s]}/{self.stem}.root" for s in sorted(self.files)]


def export_weaver(files: Sequence[str | os.PathLike], output: str | os.PathLike, *,
                  classes: Sequence[str] | None = None, max_particles: int = 128,
                  fractions: Mapping[str, float] | None = None, overwrite: bool = False,
                  progress: bool = True) -> dict[str, Any]:
    """Export resim data sets ``files`` to weaver-core's format in directory ``output``;
    returns the manifest (also written as ``output/resim_export.json``)."""
    _uproot()

    def finish(out: OutputDir, chosen: Classes, sources: list[Source]) -> dict[str, Any]:
        has_level = any(s.has_level for s in sources)
        out.path("data_config.yaml").write_text(data_config(chosen, max_particles, has_level))
        return {"tree": TREE, "data_config": "data_config.yaml"}

    return export("weaver", files, output, classes=classes, max_particles=max_particles,
                  fractions=fractions, overwrite=overwrite, progress=progress, writer=_Trees,
                  finish=finish)

"""What both export formats share: reading resim data sets in blocks of jets, the classes
and splits of the exported jets, their per-particle features, and the output directory.

A block (:class:`ExportBlock`) holds consecutive jets of one input file with everything a
writer needs, already in the exported jets' terms:

* per jet: its class (index into :class:`Classes`), its split, kinematics, substructure
  (:mod:`.substructure`, for the formats that carry it), the truth object of its group,
  and the re-simulation keys — ``group`` (unique over the whole export: ``file << 40 |
  group id in the file``), ``event``, ``variation`` (index into the export's variation
  names, the union of the inputs' in order of first appearance) and ``realization``;
* per particle, padded to the block's longest jet: :class:`resim.train.features.Particles`
  and the feature array :func:`resim.train.features.features` makes of it — Δη and Δφ to the
  jet axis (Δη flipped for jets at η < 0, as in JetClass), log pT, log E, the particle kind
  and charge — exactly what resim's own trainer sees, plus impact-parameter uncertainties.

**Impact parameters.** A file with detector-level constituents (``d0``, ``dz``, ``d0_err``,
``dz_err`` and a reconstructed ``kind`` in its ``constituents`` table) exports those. A
particle-level file has none: its charged particles get the straight-line d0 and dz that
resim's features compute from their production vertices (mm; neutral particles 0, as in
JetClass) and uncertainties of exactly 0 — a perfect detector, said in the manifest.

**Splits** are resim's own: by hard event, with the fixed hash the trainer uses too
(:func:`resim.splits.split_of`, 0.8 / 0.1 / 0.1 by default), so the realizations of a
group — and all objects of one hard event — land in one split; a file with a ``split``
attribute (a converted benchmark file) goes to that split whole.
"""

from __future__ import annotations

import json
import os
import shutil
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import DTypeLike

from .. import __version__
from ..dataset import DatasetError, JetDataset
from ..errors import ResimError
from ..flavour import SPLITTINGS
from ..layout import DETECTOR, PILEUP_COLUMNS, with_derived
from ..progress import JetProgress
from ..ranges import ranges
from ..splits import SPLITS, check_fractions, split_of
from ..store import open_data_set
from ..train.features import KINDS, Particles, features
from .substructure import substructure

#: Jets read and converted at a time: the padded features of a block (jets x longest jet x
#: 15 floats) stay well below 100 MB.
BLOCK_JETS = 2000
#: Bits of the export's group id that hold the group id within its file.
GROUP_BITS = 40
#: Detector-level constituent columns used when a file has them (else derived, see above).
DETECTOR_COLUMNS = ("d0", "dz", "d0_err", "dz_err", "kind")


class ExportError(ResimError, ValueError):
    """A bad request or an input that is not a finished resim data set (exit code 2)."""


# --------------------------------------------------------------------------- classes
#: Named class sets for ``--classes``: class name -> members, each a label of the inputs
#: or ``label:splitting`` (a per-jet refinement, resim.flavour.SPLITTINGS).
#: Members the inputs do not have are simply absent; every class is exported (one-hot
#: column) whether or not it has jets, so files exported separately agree.
PRESETS: dict[str, dict[str, tuple[str, ...]]] = {
    # JetClass's ten classes in its order (ParT's data config), from resim's cards and from
    # JetClass files converted with `resim convert jetclass` (labels QCD, Hbb, ...).
    "jetclass": {
        "QCD": ("QCD", "q", "g", "light", "c", "b"), "Hbb": ("Hbb", "hbb"),
        "Hcc": ("Hcc", "hcc"), "Hgg": ("Hgg", "hgg"), "H4q": ("H4q", "hqqqq"),
        "Hqql": ("Hqql", "hlnuqq"), "Zqq": ("Zqq", "z", "zbb"), "Wqq": ("Wqq", "w"),
        "Tbqq": ("Tbqq", "top"), "Tbl": ("Tbl", "tbl"),
    },
    # RS3L's eleven categories (arXiv 2403.07066): QCD by flavour and gluon splitting from the
    # qcdflavour card, and the hbb, wqq, zqq, zbb cards.
    "rs3l": {
        "light": ("light",), "c": ("c",), "b": ("b",), "hbb": ("hbb",),
        "g_qq": ("g:g_qq",), "g_cc": ("g:g_cc",), "g_bb": ("g:g_bb",),
        "g_gg": ("g:g_gg", "g:none"), "wqq": ("w",), "zqq": ("z",), "zbb": ("zbb",),
    },
}


@dataclass(frozen=True)
class Classes:
    """The exported classes: name -> members (``label`` or ``label:splitting``)."""

    members: dict[str, tuple[str, ...]]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.members)

    @classmethod
    def parse(cls, items: Sequence[str] | None, labels: Sequence[str]) -> Classes:
        """``--classes`` values: one preset name, or ``NAME=MEMBER[,MEMBER...]`` items; none:
        every label of the inputs its own class. Members of an explicit mapping must exist."""
        if not items:
            return cls({name: (name,) for name in labels})
        if len(items) == 1 and "=" not in items[0]:
            return cls(dict(_preset(items[0])))
        members: dict[str, tuple[str, ...]] = {}
        claimed: dict[tuple[str, str], str] = {}  # (label, splitting or "") -> class
        for item in items:
            name, chosen = _class_item(item)
            if name in members:
                raise ExportError(f"--classes {item}: class {name!r} given twice")
            for m in chosen:
                label, split = _member(item, m, labels)
                # A jet belongs to one class: a label taken whole, or per splitting, once.
                clash = [c for (lb, s), c in claimed.items()
                         if lb == label and (not s or not split or s == split)]
                if clash:
                    raise ExportError(f"--classes {item}: {m!r} overlaps class {clash[0]!r}")
                claimed[(label, split)] = name
            members[name] = chosen
        return cls(members)

    def table(self, labels: Sequence[str]) -> np.ndarray:
        """(label code, splitting code + 1) -> class index (-1: not exported) for a file
        with these label names; splitting -1 (unknown) is column 0."""
        codes = sorted(SPLITTINGS)
        table = np.full((len(labels), codes[-1] + 2), -1, np.int64)
        by_name = {v: k for k, v in SPLITTINGS.items()}
        for k, members in enumerate(self.members.values()):
            for m in members:
                label, _, split = m.partition(":")
                if label not in labels:
                    continue
                row = table[labels.index(label)]
                columns = [by_name[split] + 1] if split else slice(None)
                row[columns] = k  # classes never overlap (parse checks; presets do not)
        return table


def _preset(name: str) -> dict[str, tuple[str, ...]]:
    """A named class set of ``--classes``."""
    if name not in PRESETS:
        raise ExportError(f"--classes {name}: not a preset ({', '.join(PRESETS)}) "
                          "nor NAME=LABEL[,LABEL...]")
    return PRESETS[name]


def _class_item(item: str) -> tuple[str, tuple[str, ...]]:
    """One ``NAME=MEMBER[,MEMBER...]`` item: the class name and its members."""
    name, sep, rest = item.partition("=")
    name = name.strip()
    chosen = tuple(m.strip() for m in rest.split(",") if m.strip())
    if not sep or not name or not chosen:
        raise ExportError(f"--classes {item}: expected NAME=LABEL[,LABEL...] "
                          "(a LABEL may be refined per jet, e.g. g:g_bb)")
    return name, chosen


def _member(item: str, member: str, labels: Sequence[str]) -> tuple[str, str]:
    """A class member ``label`` or ``label:splitting`` of ``item``, checked against the
    inputs' labels: (label, splitting or "")."""
    label, _, split = member.partition(":")
    if label not in labels:
        raise ExportError(f"--classes {item}: unknown label {label!r}; the inputs "
                          f"have {', '.join(labels)}")
    if split and split not in SPLITTINGS.values():
        raise ExportError(f"--classes {item}: unknown splitting {split!r}; one of "
                          f"{', '.join(SPLITTINGS.values())}")
    return label, split


# --------------------------------------------------------------------------- inputs
@dataclass
class Source:
    """One input data set, checked."""

    index: int
    path: Path
    labels: tuple[str, ...]
    variations: tuple[str, ...]
    split: str  # "" or the file's split attribute
    radius: float
    n_jets: int
    detector: tuple[str, ...]  # the DETECTOR_COLUMNS it has
    has_level: bool
    detector_jets: bool  # whether any jet is detector level (measured d0_err, dz_err)


def _radius(card_text: str) -> float:
    try:
        return float(tomllib.loads(card_text).get("jets", {}).get("radius", 0.8))
    except (tomllib.TOMLDecodeError, TypeError, ValueError):
        return 0.8


def _has_detector_jets(h5: Any) -> bool:
    # Format-2 files store d0_err and dz_err for particle-level jets too (0): only
    # detector-level jets carry measured ones.
    return ("level" in h5["jets"] and {"d0_err", "dz_err"} <= set(h5["constituents"])
            and bool(np.any(h5["jets/level"][:] == DETECTOR)))


def open_sources(paths: Sequence[str | os.PathLike]) -> list[Source]:
    """Check every input before anything is written: a finished resim data set each."""
    if not paths:
        raise ExportError("no input files")
    sources = []
    for i, p in enumerate(paths):
        path = Path(p)
        try:
            with JetDataset(path) as ds, open_data_set(path) as h5:
                sources.append(Source(
                    index=i, path=path, labels=ds.labels, variations=ds.variations,
                    split=str(ds.attrs.get("split", "") or ""), radius=_radius(ds.card),
                    n_jets=len(ds),
                    detector=tuple(c for c in DETECTOR_COLUMNS if c in h5["constituents"]),
                    has_level="level" in h5["jets"],
                    detector_jets=_has_detector_jets(h5)))
        except (DatasetError, OSError, KeyError) as err:
            raise ExportError(str(err) if isinstance(err, DatasetError)
                              else f"{path}: cannot read it as a resim data set ({err})") from None
        if sources[-1].split not in ("", *SPLITS):
            raise ExportError(f"{path}: its split attribute is {sources[-1].split!r}; expected "
                              f"one of {', '.join(SPLITS)}")
    stems: dict[str, Path] = {}
    for s in sources:
        if s.path.stem in stems:
            raise ExportError(f"{stems[s.path.stem]} and {s.path}: two inputs named "
                              f"{s.path.stem!r}; the exported files are named after the "
                              "inputs, rename one")
        stems[s.path.stem] = s.path
    return sources


def union(lists: Sequence[Sequence[str]]) -> tuple[str, ...]:
    """Names in order of first appearance."""
    return tuple(dict.fromkeys(n for names in lists for n in names))


def parse_fractions(text: str | None) -> dict[str, float] | None:
    """``--fractions TRAIN,VAL,TEST`` as the trainer's mapping (None: its default)."""
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",")]
        return check_fractions(dict(zip(SPLITS, values, strict=True)))
    except ValueError:  # not numbers, not three, or not fractions summing to 1
        raise ExportError(f"--fractions {text}: expected three numbers in [0, 1] summing to "
                          "1, e.g. 0.8,0.1,0.1") from None


def split_codes(source: Source, events: np.ndarray,
                fractions: Mapping[str, float] | None) -> np.ndarray:
    """Index into :data:`SPLITS` of jets from hard events ``events`` of ``source``."""
    if source.split:
        return np.full(len(events), SPLITS.index(source.split), np.int64)
    return split_of(events, fractions)


# --------------------------------------------------------------------------- blocks
@dataclass
class ExportBlock:
    """Consecutive exported jets of one input (see the module docstring)."""

    jets: dict[str, np.ndarray]
    particles: Particles
    x: np.ndarray  # (N, P, len(FEATURES)) resim's features
    d0_err: np.ndarray  # (N, P)
    dz_err: np.ndarray
    split: np.ndarray  # (N,) index into SPLITS
    #: (N, P) each: the particles' PILEUP_COLUMNS (vertex, weight, pileup; no pileup in
    #: files older than format version 3)
    pileup: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.split)

    def take(self, rows: np.ndarray) -> ExportBlock:
        return ExportBlock({c: v[rows] for c, v in self.jets.items()},
                           self.particles.take(rows), self.x[rows], self.d0_err[rows],
                           self.dz_err[rows], self.split[rows],
                           {c: v[rows] for c, v in self.pileup.items()})


def _pad(values: np.ndarray, counts: np.ndarray, n_slots: int, dtype: DTypeLike
         ) -> np.ndarray:
    jet = np.repeat(np.arange(len(counts)), counts)
    slot = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    out = np.zeros((len(counts), n_slots), dtype)
    out[jet, slot] = values
    return out


#: Jet columns every export carries (beside the constituents).
JET_COLUMNS = ("pt", "eta", "phi", "mass", "n_constituents", "group", "event", "variation",
               "realization", "label", "n_b_hadrons", "n_c_hadrons", "splitting", "n_pileup")
#: Per-jet columns of resim's that the exports carry as they are (as int64).
JET_KEYS = ("n_b_hadrons", "n_c_hadrons", "splitting", "n_pileup")
CONSTITUENT_COLUMNS = ("px", "py", "pz", "E", "pid", "charge", "vx", "vy", "vz")


def read_blocks(source: Source, classes: Classes, variations: Sequence[str],
                fractions: Mapping[str, float] | None, with_substructure: bool = True,
                step: int = BLOCK_JETS) -> Iterator[ExportBlock]:
    """The exported jets of ``source`` (those in some class), ``step`` input jets at a time;
    ``with_substructure``: also soft-drop mass and N-subjettiness (FastJet's clustering
    takes most of an export's time: ~2.5 ms a jet)."""
    class_of = classes.table(list(source.labels))
    variation_code = np.array([variations.index(v) for v in source.variations])
    with open_data_set(source.path) as h5:
        jets_h5, cons_h5 = h5["jets"], h5["constituents"]
        counts_all = jets_h5["n_constituents"][:].astype(np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts_all)])
        groups = {c: h5["groups"][c][:] for c in ("group", "pid", "pt", "eta", "phi")}
        order = np.argsort(groups["group"], kind="stable")
        present = [c for c in (*JET_COLUMNS, "level") if c in jets_h5]
        stored = [c for c in (*CONSTITUENT_COLUMNS, *source.detector, *PILEUP_COLUMNS)
                  if c in cons_h5]
        for a in range(0, source.n_jets, step):
            b = min(a + step, source.n_jets)
            # older files: the columns they lack (but ``level`` only where stored)
            jets = with_derived("jets", {c: jets_h5[c][a:b] for c in present},
                                only=JET_COLUMNS)
            klass = class_of[jets["label"].astype(np.int64),
                             np.clip(jets["splitting"].astype(np.int64) + 1, 0, None)]
            rows = np.flatnonzero(klass >= 0)
            if not len(rows):
                continue
            counts = counts_all[a:b][rows]
            lo, hi = offsets[a], offsets[b]
            take = ranges(offsets[a:b][rows] - lo, counts)[0]
            cons = with_derived("constituents", {c: cons_h5[c][lo:hi][take] for c in stored},
                                only=PILEUP_COLUMNS)
            yield _block(source, {c: v[rows] for c, v in jets.items()}, counts, cons,
                         klass[rows], groups, order, variation_code, fractions,
                         with_substructure)


def _block(source: Source, jets: dict[str, np.ndarray], counts: np.ndarray,
           cons: dict[str, np.ndarray], klass: np.ndarray, groups: dict[str, np.ndarray],
           order: np.ndarray, variation_code: np.ndarray,
           fractions: Mapping[str, float] | None, with_substructure: bool) -> ExportBlock:
    n_slots = max(int(counts.max(initial=1)), 1)
    p = Particles.from_flat(cons, counts, n_slots)
    if "kind" in cons:  # a reconstructed kind (index into KINDS) beats one from the PDG id
        p.kind = np.where(p.mask, _pad(cons["kind"], counts, n_slots, np.int8), 0)
    for c in ("d0", "dz"):
        if c in cons:
            setattr(p, c, _pad(cons[c], counts, n_slots, np.float32))
    errors = {c: (_pad(cons[c], counts, n_slots, np.float32) if c in cons
                  else np.zeros(p.mask.shape, np.float32)) for c in ("d0_err", "dz_err")}
    pileup = {c: _pad(cons[c], counts, n_slots, cons[c].dtype) for c in PILEUP_COLUMNS}
    x, _ = features(p)

    group = jets["group"].astype(np.int64)
    at = order[np.searchsorted(groups["group"], group, sorter=order)]
    pt, eta, mass = (jets[c].astype(np.float64) for c in ("pt", "eta", "mass"))
    out = {
        "class": klass, "pt": pt, "eta": eta, "phi": jets["phi"].astype(np.float64),
        "mass": mass, "energy": np.sqrt((pt * np.cosh(eta)) ** 2 + mass ** 2),
        "n_particles": counts,
        "group": (np.int64(source.index) << GROUP_BITS) | group,
        "event": jets["event"].astype(np.int64),
        "variation": variation_code[jets["variation"].astype(np.int64)],
        "realization": jets["realization"].astype(np.int64),
        "file": np.full(len(counts), source.index, np.int64),
        "label": jets["label"].astype(np.int64),
        **{c: jets[c].astype(np.int64) for c in JET_KEYS},
        "truth_pid": groups["pid"][at].astype(np.int64),
        **{f"truth_{c}": groups[c][at].astype(np.float64) for c in ("pt", "eta", "phi")},
    }
    if with_substructure:
        out.update(substructure(cons["px"], cons["py"], cons["pz"], cons["E"], counts,
                                source.radius))
    if "level" in jets:  # detector-level data sets: which level each jet is
        out["level"] = jets["level"].astype(np.int64)
    return ExportBlock(out, p, x, errors["d0_err"], errors["dz_err"],
                       split_codes(source, out["event"], fractions), pileup)


# --------------------------------------------------------------------------- output
#: The manifest every export holds (what it is, where from): marks a directory as one.
MANIFEST = "resim_export.json"


class OutputDir:
    """The export directory, written as ``DIR.tmp`` and moved into place when complete."""

    def __init__(self, target: str | os.PathLike, overwrite: bool):
        self.target = Path(target)
        if self.target.exists() and not overwrite:
            raise ExportError(f"{self.target} exists; remove it or pass --overwrite")
        if self.target.exists() and not (self.target / MANIFEST).is_file():
            # --overwrite deletes the whole directory: never a data set or anything else
            raise ExportError(f"{self.target} is not an export (no {MANIFEST}); --overwrite "
                              "replaces only an earlier export: remove it yourself or "
                              "write elsewhere")
        if not self.target.parent.is_dir():
            raise ExportError(f"{self.target.parent}: no such directory")
        self.tmp = self.target.with_name(self.target.name + ".tmp")
        shutil.rmtree(self.tmp, ignore_errors=True)
        try:
            self.tmp.mkdir()
        except OSError as err:
            raise ExportError(f"{self.tmp}: cannot create it ({err.strerror})") from None

    def path(self, *parts: str) -> Path:
        out = self.tmp.joinpath(*parts)
        out.parent.mkdir(parents=True, exist_ok=True)
        return out

    def finish(self) -> None:
        if self.target.exists():
            old = self.target.with_name(self.target.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(self.target, old)
            os.replace(self.tmp, self.target)
            shutil.rmtree(old)
        else:
            os.replace(self.tmp, self.target)

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def manifest(fmt: str, sources: Sequence[Source], classes: Classes,
             variations: Sequence[str], counts: np.ndarray, files: dict[str, list[str]],
             extra: dict[str, Any]) -> dict[str, Any]:
    """What the export holds, where it came from, and how to read its extra columns
    (written as ``resim_export.json`` beside the files)."""
    derived = [str(s.path) for s in sources if not s.detector_jets]
    return {
        "format": fmt, "resim_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "inputs": [{"path": str(s.path), "labels": list(s.labels),
                    "variations": list(s.variations), "split": s.split or None,
                    "n_jets": s.n_jets} for s in sources],
        "classes": {name: list(m) for name, m in classes.members.items()},
        "variations": list(variations),
        "splittings": {str(k): v for k, v in SPLITTINGS.items()},
        "particle_kinds": list(KINDS),
        "jets": {split: dict(zip(classes.names, counts[i].tolist(), strict=True))
                 for i, split in enumerate(SPLITS)},
        "files": files,
        "group_id": f"file << {GROUP_BITS} | group id within the file (inputs[file])",
        "impact_parameter_errors": (
            "0 (particle level: straight-line d0/dz from production vertices, no detector) "
            f"for {', '.join(derived)}" if derived else "from the inputs' detector columns"),
        **extra,
    }


class Writer(Protocol):
    """A format's files for one input: ``write`` a block's jets of one split; ``close``
    returns the files written (relative to the export directory)."""

    def write(self, split: int, block: ExportBlock) -> None: ...

    def close(self) -> list[str]: ...


def export(fmt: str, files: Sequence[str | os.PathLike], output: str | os.PathLike, *,
           classes: Sequence[str] | None, max_particles: int,
           fractions: Mapping[str, float] | None, overwrite: bool, progress: bool,
           writer: Callable[[OutputDir, Source, Classes], Writer],
           finish: Callable[[OutputDir, Classes, list[Source]], dict[str, Any]],
           with_substructure: bool = True) -> dict[str, Any]:
    """Read every input block by block and hand each split's jets to the format's
    ``writer``; ``finish`` writes what the format needs beside the files and returns its
    entries of the manifest. Everything is checked before anything is written, and the
    directory appears only when complete. Returns the manifest."""
    if max_particles < 1:
        raise ExportError(f"--max-particles must be >= 1, got {max_particles}")
    sources = open_sources(files)
    chosen = Classes.parse(classes, union([s.labels for s in sources]))
    variations = union([s.variations for s in sources])
    out = OutputDir(output, overwrite)
    counts = np.zeros((len(SPLITS), len(chosen.names)), np.int64)
    written: dict[str, list[str]] = {}
    bar = JetProgress(sum(s.n_jets for s in sources), label=f"exporting ({fmt})",
                      enabled=progress)
    try:
        for source in sources:
            files_of = writer(out, source, chosen)
            try:
                for block in read_blocks(source, chosen, variations, fractions,
                                         with_substructure):
                    for s in np.unique(block.split).tolist():
                        part = block.take(np.flatnonzero(block.split == s))
                        files_of.write(s, part)
                        np.add.at(counts[s], part.jets["class"], 1)
                    bar.update(len(block), len(block), len(block), 0)
            finally:
                written[str(source.path)] = files_of.close()
        data = manifest(fmt, sources, chosen, variations, counts, written,
                        {"max_particles": max_particles, **finish(out, chosen, sources)})
        out.path(MANIFEST).write_text(json.dumps(data, indent=1) + "\n")
        out.finish()
    except BaseException:
        out.abort()
        raise
    finally:
        bar.close()
    return data

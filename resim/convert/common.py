"""What every benchmark converter shares: jets as resim tables, and writing them out.

A converter reads its upstream format in blocks of jets and hands each block over as a
:class:`JetBlock` — per-jet constituent counts, the constituents' flat columns (resim's
``px, py, pz, E, pid, charge, vx, vy, vz``, and ``d0, dz, d0_err, dz_err, kind`` where the
source measured them; else they are derived as for particle-level jets), class indices
and what truth the source keeps. Both benchmarks are Delphes output: their jets are
detector-level (``level = "detector"``). :func:`write_benchmark` turns the blocks into
resim's four tables and streams them into one self-contained data set
(:class:`resim.store.DatasetWriter`), so nothing larger than a block is ever in memory.

In the result every jet is its own group with one realization, variation ``nominal``, and
is its own "hard event": ``event`` = the jet's position in the output, ``group`` =
``16 * event`` (resim's ``event * 16 + object`` with one object). Constituents are sorted by
decreasing pT within each jet, as resim writes them; the jet four-momentum is the E-scheme
sum of the constituents, as for resim's own jets.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import awkward as ak
import h5py
import numpy as np

from .. import __version__
from ..dataset import repeated_file
from ..errors import ResimError
from ..layout import DETECTOR, Tables, as_table, with_derived
from ..progress import JetProgress
from ..splits import SPLITS
from ..store import DatasetWriter


class ConvertError(ResimError, ValueError):
    """An input file that is not in the expected upstream format, or a bad request."""


@dataclass
class JetBlock:
    """Consecutive jets from a source file, constituents flat and pT-ordered per jet.

    ``constituents`` holds resim's constituent columns, ``counts.sum()`` rows; ``label``
    indexes the converter's class names; ``truth`` holds per-jet ``pid, pt, eta, phi,
    mass`` of the truth object where the source keeps them (zeros where it does not).
    """

    counts: np.ndarray
    constituents: dict[str, np.ndarray]
    label: np.ndarray
    truth: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.counts)


def pt_order(pt: ak.Array) -> ak.Array:
    """Per-jet indices that sort constituents by decreasing pT (stable: ties keep order)."""
    return ak.argsort(pt, axis=1, ascending=False, stable=True)


def jet_kinematics(px: np.ndarray, py: np.ndarray, pz: np.ndarray, energy: np.ndarray,
                   counts: np.ndarray) -> dict[str, np.ndarray]:
    """pt, eta, phi, mass of the sum of each jet's constituents (float64 sums)."""
    jet = np.repeat(np.arange(len(counts)), counts)
    p = [np.bincount(jet, weights=np.asarray(c, np.float64), minlength=len(counts))
         for c in (px, py, pz, energy)]
    pt = np.hypot(p[0], p[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.where(pt > 0, np.arcsinh(p[2] / np.where(pt > 0, pt, 1.0)), 0.0)
    mass = np.sqrt(np.maximum(p[3] ** 2 - pt ** 2 - p[2] ** 2, 0.0))
    return {"pt": pt, "eta": eta, "phi": np.arctan2(p[1], p[0]), "mass": mass}


def block_tables(block: JetBlock, first_event: int) -> Tables:
    """resim's four tables for one block whose first jet is hard event ``first_event``."""
    n = len(block)
    event = first_event + np.arange(n, dtype=np.int64)
    group = event * 16
    c = with_derived("constituents", block.constituents)
    kin = jet_kinematics(c["px"], c["py"], c["pz"], c["E"], block.counts)
    zeros = np.zeros(n, np.int64)
    unknown = np.full(n, -1, np.int64)  # the benchmarks keep no hadron-level truth
    jets = {**kin, "n_constituents": block.counts, "group": group, "event": event,
            "variation": zeros, "realization": zeros, "seed": zeros, "label": block.label,
            "level": np.full(n, DETECTOR), "n_b_hadrons": unknown, "n_c_hadrons": unknown,
            "splitting": unknown, "n_pileup": zeros}
    groups = {"group": group, "event": event, "object": zeros, "label": block.label,
              **block.truth, "n_jets": np.ones(n, np.int64)}
    events = {"event": event, "n_objects": np.ones(n, np.int64), "n_failed": zeros,
              "n_lost": zeros, "hard_ok": np.ones(n, bool), "weight": np.ones(n)}
    return {"jets": as_table("jets", jets), "constituents": as_table("constituents", c),
            "groups": as_table("groups", groups), "events": as_table("events", events)}


def check_output(output: Path, overwrite: bool, inputs: Sequence[Path] = ()) -> None:
    """``output`` may be written (and is none of ``inputs``, each given once)."""
    twice = repeated_file(inputs)
    if twice is not None:
        raise ConvertError(f"{twice[0]} and {twice[1]}: the same file given twice")
    if output.resolve() in {p.resolve() for p in inputs}:  # --overwrite would replace it
        raise ConvertError(f"{output}: is also an input; write the data set elsewhere")
    if output.exists() and not overwrite:
        raise ConvertError(f"{output} exists; remove it or pass --overwrite")
    if not output.parent.is_dir():
        raise ConvertError(f"{output.parent}: no such directory")


def write_benchmark(output: Path, blocks: Iterable[JetBlock], *, labels: Sequence[str],
                    source: str, files: Sequence[Path], total: int, split: str | None,
                    versions: dict[str, str], progress: bool = True) -> dict[str, Any]:
    """Stream ``blocks`` into a self-contained resim data set at ``output``; its summary.

    ``total`` (jets expected) only sizes the progress bar. ``split`` (train/val/test)
    is stored as the ``split`` attribute: the upstream split this file belongs to.
    """
    if split is not None and split not in SPLITS:
        raise ConvertError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    counts = np.zeros(len(labels), np.int64)
    n_jets = n_constituents = 0
    bar = JetProgress(total, label=f"converting {source}", enabled=progress)
    try:
        with DatasetWriter(output) as out:
            for block in blocks:
                out.append(block_tables(block, first_event=n_jets))
                n_jets += len(block)
                n_constituents += int(block.counts.sum())
                counts += np.bincount(block.label, minlength=len(labels))
                bar.update(len(block), len(block), len(block), 0)
            summary = {
                "source": source, "files": [str(f) for f in files], "split": split,
                "n_events": n_jets, "n_jets": n_jets, "n_constituents": n_constituents,
                "variations": {"nominal": n_jets},
                "labels": dict(zip(labels, counts.tolist(), strict=True)),
            }
            out.finish(_attrs(summary, labels, versions))
    finally:
        bar.close()
    return summary


def _source_line(source: str, files: Sequence[str]) -> str:
    more = f" and {len(files) - 1} more" if len(files) > 1 else ""
    return f"{source} {files[0]}{more}" if files else source


def _attrs(summary: dict[str, Any], labels: Sequence[str],
           versions: dict[str, str]) -> dict[str, Any]:
    n = summary["n_jets"]
    return {
        # No card made these jets; where the card's path is shown, show the source.
        "card": "", "card_path": _source_line(summary["source"], summary["files"]),
        "summary": json.dumps(summary),
        "source_format": summary["source"], "source_files": json.dumps(summary["files"]),
        "split": summary["split"] or "",
        "variations": ["nominal"], "labels": list(labels),
        "seed": 0, "n_events": n, "n_groups": n, "n_jets": n, "n_failed": 0, "n_lost": 0,
        "n_hard_failed": 0, "n_ranks": 1,
        "resim_version": __version__, "awkward_version": ak.__version__,
        "h5py_version": h5py.__version__, "hdf5_version": h5py.version.hdf5_version,
        **versions,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
    }


__all__ = ["SPLITS", "ConvertError", "JetBlock", "block_tables", "check_output",
           "jet_kinematics", "pt_order", "write_benchmark"]

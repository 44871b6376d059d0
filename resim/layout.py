"""The HDF5 layout of a resim data set: table and column names, types, chunking.

A data set has four tables, each an HDF5 group of equally long 1-D columns:

- ``jets``: one row per jet, particle- or detector-level (``level``); all jets of a
  group are contiguous;
- ``constituents``: one row per constituent, the jets' lists concatenated in jet order
  (a jet's rows start at the sum of ``n_constituents`` of the jets before it);
- ``groups``: one row per group (truth object with at least one jet);
- ``events``: one row per hard event: objects found, failures, weight.

Storing per-jet counts rather than offsets lets files be concatenated (HDF5 virtual
data sets only concatenate). ``docs/format.md`` describes every column.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import numpy as np
from numpy.typing import ArrayLike

from .generators.propagation import impact_parameters

FORMAT = "resim-jets"
#: The format's version; :data:`ADDED_IN` says what each version added. Older files still
#: open: readers fill in what they lack (:func:`with_derived`).
FORMAT_VERSION = 3

#: Values of ``jets/level``: jets of the generated particles, or of the detector's
#: reconstructed candidates.
LEVELS = ("particle", "detector")
PARTICLE, DETECTOR = range(len(LEVELS))

#: Values of ``constituents/kind`` (the particle-flow types of CMS and JetClass).
KINDS = ("charged_hadron", "neutral_hadron", "photon", "electron", "muon")
CHARGED_HADRON, NEUTRAL_HADRON, PHOTON, ELECTRON, MUON = range(len(KINDS))

f4, f8, i1, i2, i4, i8 = np.float32, np.float64, np.int8, np.int16, np.int32, np.int64

TABLES: dict[str, dict[str, type]] = {
    "jets": {
        "pt": f4, "eta": f4, "phi": f4, "mass": f4, "n_constituents": i4,
        "group": i8, "event": i8, "variation": i1, "realization": i2, "seed": i4, "label": i1,
        "level": i1, "n_b_hadrons": i1, "n_c_hadrons": i1, "splitting": i1, "n_pileup": i2,
    },
    "constituents": {
        "px": f4, "py": f4, "pz": f4, "E": f4, "pid": i4, "charge": i1,
        "vx": f4, "vy": f4, "vz": f4, "d0": f4, "dz": f4, "d0_err": f4, "dz_err": f4,
        "kind": i1, "vertex": i1, "weight": f4, "pileup": i1,
    },
    "groups": {
        "group": i8, "event": i8, "object": i1, "label": i1, "pid": i4,
        "pt": f4, "eta": f4, "phi": f4, "mass": f4, "n_jets": i4,
    },
    "events": {
        "event": i8, "n_objects": i2, "n_failed": i4, "n_lost": i4, "hard_ok": np.bool_,
        "weight": f8,
    },
}

#: Rows per HDF5 chunk: large enough for fast sequential reads, small enough that a
#: training batch does not decompress much more than it needs.
CHUNK_ROWS = {"jets": 8192, "constituents": 65536, "groups": 8192, "events": 8192}

#: gzip (readable by every HDF5 tool) at a low level: most of the gain, little CPU; a
#: Fletcher-32 checksum per chunk, by which a resumed run finds chunks a crash damaged.
COMPRESSION = {"compression": "gzip", "compression_opts": 1, "fletcher32": True}

#: Columns stored without HDF5's shuffle filter. Shuffling (grouping the bytes of each
#: value by significance) helps smooth floats and slowly varying integers — momenta
#: compress to 0.83 of raw with it, 0.94 without — but not production vertices, mostly
#: exact zeros for particles from the primary vertex (0.55 without, 0.87 with), nor PDG
#: ids, a few distinct values (0.17 without, 0.29 with). Measured on top-quark jets.
UNSHUFFLED = {("constituents", c) for c in ("pid", "vx", "vy", "vz")}


def kind_of(pid: np.ndarray, charge: np.ndarray) -> np.ndarray:
    """The :data:`KINDS` index of particles with PDG ids ``pid`` and charges ``charge``."""
    apid = np.abs(pid)
    return np.select(
        [apid == 11, apid == 13, apid == 22, np.asarray(charge) != 0],
        [ELECTRON, MUON, PHOTON, CHARGED_HADRON],
        NEUTRAL_HADRON,
    ).astype(np.int8)


#: Constituent columns that particle-level jets derive from the others (format version 2).
IMPACT_COLUMNS = ("d0", "dz", "d0_err", "dz_err", "kind")
#: Constituent columns of pileup mitigation (format version 3): which vertex a track
#: belongs to (0 the primary, 1 a pileup vertex, -1 none: a calorimeter candidate or a
#: neutral particle), the weight its four-momentum was scaled by, and whether it came from
#: pileup (truth).
PILEUP_COLUMNS = ("vertex", "weight", "pileup")
#: Constituent columns made from the others where nothing measured them: at particle
#: level, and for files older than them.
DERIVED = (*IMPACT_COLUMNS, *PILEUP_COLUMNS)

#: The columns each format version added: files of an older version lack them, and
#: readers make them up (:func:`with_derived`).
ADDED_IN = {2: {"jets": ("level", "n_b_hadrons", "n_c_hadrons", "splitting"),
                "constituents": IMPACT_COLUMNS},
            3: {"jets": ("n_pileup",), "constituents": PILEUP_COLUMNS}}
#: What jet columns read as in a file too old to have them: particle level, heavy flavour
#: and gluon splitting unknown (-1), no pileup.
OLDER_JETS = {"level": PARTICLE, "n_b_hadrons": -1, "n_c_hadrons": -1, "splitting": -1,
              "n_pileup": 0}


def stored_columns(version: int) -> dict[str, tuple[str, ...]]:
    """The columns of each table that a file of format ``version`` stores."""
    later = {(t, c) for v, tables in ADDED_IN.items() if v > version
             for t, cs in tables.items() for c in cs}
    return {t: tuple(c for c in cs if (t, c) not in later) for t, cs in TABLES.items()}


def without_pileup(c: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The :data:`PILEUP_COLUMNS` of constituents with no pileup around: every track from
    the primary vertex, weight 1, nothing from pileup."""
    charged = np.asarray(c["charge"]) != 0
    return {"vertex": np.where(charged, 0, -1).astype(np.int8),
            "weight": np.ones(len(charged), np.float32),
            "pileup": np.zeros(len(charged), np.int8)}


def particle_level_columns(c: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The :data:`DERIVED` columns of particle-level constituents (``c``: the others):
    kind from the PDG id and charge, straight-line impact parameters of charged particles
    from their vertex (0 for neutral ones), uncertainties 0, no pileup."""
    d0, dz = impact_parameters(*(np.asarray(c[k], np.float64)
                                 for k in ("px", "py", "pz", "vx", "vy", "vz")))
    charged = np.asarray(c["charge"]) != 0
    zeros = np.zeros(len(charged), np.float32)
    return {"d0": np.where(charged, d0, 0.0), "dz": np.where(charged, dz, 0.0),
            "d0_err": zeros, "dz_err": zeros, "kind": kind_of(c["pid"], c["charge"]),
            **without_pileup(c)}


def with_derived(table: str, c: dict[str, np.ndarray],
                 only: Collection[str] | None = None) -> dict[str, np.ndarray]:
    """Rows ``c`` of ``table`` (some of its columns) with the :data:`ADDED_IN` columns they
    lack (``only`` those, if given), as a file older than those columns reads: jets as
    :data:`OLDER_JETS` says; constituents lacking impact parameters as particle-level ones
    (:func:`particle_level_columns`, from ``px, py, pz, vx, vy, vz, pid, charge``), those
    lacking only the pileup columns (a version-2 file, a detector without pileup) without
    pileup (from ``charge``). Columns ``c`` has are kept; types are the layout's."""
    added = [k for tables in ADDED_IN.values() for k in tables.get(table, ())]
    missing = [k for k in added if k not in c and (only is None or k in only)]
    if not missing:
        return c
    if table == "jets":
        n = len(next(iter(c.values())))
        made = {k: np.full(n, OLDER_JETS[k]) for k in missing}
    elif table == "constituents":
        made = (without_pileup(c) if set(missing) <= set(PILEUP_COLUMNS)
                else particle_level_columns(c))
    else:
        raise KeyError(f"table {table} has no columns added after version 1")
    spec = TABLES[table]
    return {**{k: np.asarray(made[k]).astype(spec[k], copy=False) for k in missing}, **c}


def filters(table: str, column: str) -> dict[str, object]:
    """h5py ``create_dataset`` filter options of one column."""
    return {**COMPRESSION, "shuffle": (table, column) not in UNSHUFFLED}


def empty_tables() -> dict[str, dict[str, np.ndarray]]:
    return {t: {c: np.empty(0, dt) for c, dt in cols.items()} for t, cols in TABLES.items()}


def as_table(name: str, columns: Mapping[str, ArrayLike]) -> dict[str, np.ndarray]:
    """Columns cast to the layout's types, in the layout's order; checks nothing is missing."""
    spec = TABLES[name]
    missing = set(spec) - set(columns)
    if missing:
        raise KeyError(f"table {name} lacks columns {sorted(missing)}")
    return {c: np.asarray(columns[c]).astype(dt, copy=False) for c, dt in spec.items()}


Tables = dict[str, dict[str, np.ndarray]]


def concatenate_tables(parts: list[Tables]) -> Tables:
    """Several blocks' tables as one, rows in order."""
    return {t: {c: np.concatenate([p[t][c] for p in parts]) for c in cols}
            for t, cols in TABLES.items()}

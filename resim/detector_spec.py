"""The ``[detector]`` card section: a parametrized detector, as frozen dataclasses.

A card's ``[detector]`` names a shipped preset (``preset = "cms"``,
``cards/detectors/cms.toml``: the CMS card as JetClass used it in Delphes, every number
with its source) and may override any of its keys by the same key path; a variation may
override keys again with its own ``detector = { ... }`` table. Tables merge key by key,
so ``[detector.tracking.d0_resolution] values = [...]`` keeps the preset's bin edges.

The parametrizations are defined here, each with a plain numpy evaluation that states its
formula (the tests' reference; the simulation looks the same values up faster, bit for bit,
in :mod:`resim.generators.bins`):
piecewise-constant tables in (|η|, pT) (:class:`BinnedTable`: efficiencies, impact-
parameter resolutions), the relative track-pT resolution (:class:`TrackResolution`) and
the calorimeter energy resolution (:class:`EnergyResolution`). The simulation that uses
them is :mod:`resim.generators.detector`; ``docs/cards.md`` documents every key.
"""

from __future__ import annotations

import copy
import itertools
import math
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from typing import Any

import numpy as np

from .schema import Table, declared, declared_keys, read

#: Presets shipped in ``cards/detectors/``.
PRESETS = ("cms",)


def _column(edges: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bin index, inside) of each ``x`` among half-open bins [edges[i], edges[i+1])."""
    i = np.searchsorted(edges, x, side="right") - 1
    inside = (i >= 0) & (i < len(edges) - 1)
    return np.clip(i, 0, len(edges) - 2), inside


@dataclass(frozen=True)
class BinnedTable:
    """A value per (|η| bin, pT bin): 0 outside the |η| edges and below the first pT edge;
    the last pT bin extends to any pT."""

    # Read by :func:`_binned` (the bins set the shape of ``values``).
    eta_edges: tuple[float, ...] = declared(required=True)
    pt_edges: tuple[float, ...] = declared(required=True)
    values: tuple[tuple[float, ...], ...] = declared(required=True)

    @cached_property
    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return np.asarray(self.eta_edges), np.asarray(self.pt_edges), np.asarray(self.values)

    def __call__(self, pt: np.ndarray, abs_eta: np.ndarray) -> np.ndarray:
        eta_edges, pt_edges, values = self._arrays
        row, inside = _column(eta_edges, abs_eta)
        col = np.searchsorted(pt_edges, pt, side="right") - 1
        value = values[row, np.maximum(col, 0)]
        return np.where(inside & (col >= 0), value, 0.0)


@dataclass(frozen=True)
class TrackResolution:
    """Relative pT resolution sqrt(constant² + (slope·pT)²) per |η| bin (Delphes'
    MomentumSmearing formulas); 0 outside the edges."""

    # Read by :func:`_track_resolution` (one value per bin).
    eta_edges: tuple[float, ...] = declared(required=True)
    constant: tuple[float, ...] = declared(required=True)
    slope: tuple[float, ...] = declared(required=True)

    def __call__(self, pt: np.ndarray, abs_eta: np.ndarray) -> np.ndarray:
        row, inside = _column(np.asarray(self.eta_edges), abs_eta)
        a, b = np.asarray(self.constant)[row], np.asarray(self.slope)[row] * pt
        return np.where(inside, np.sqrt(a * a + b * b), 0.0)


@dataclass(frozen=True)
class EnergyResolution:
    """Calorimeter resolution σ(E) = shape(η) · sqrt((constant·E)² + stochastic²·E +
    noise²) per |η| bin, with shape = s0 + s2·(|η| − η0)² from ``shape = [s0, s2, η0]``
    (Delphes' ECal/HCal ResolutionFormula); 0 outside the edges."""

    # Read by :func:`_energy_resolution` (one value per bin).
    eta_edges: tuple[float, ...] = declared(required=True)
    constant: tuple[float, ...] = declared(required=True)
    stochastic: tuple[float, ...] = declared(required=True)
    noise: tuple[float, ...] = declared(required=True)
    shape: tuple[tuple[float, float, float], ...] = declared(required=True)

    def coefficients(self, abs_eta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(a, b, c) with σ(E)² = a E² + b E + c at each |η| (all 0 outside the edges)."""
        row, inside = _column(np.asarray(self.eta_edges), abs_eta)
        c, s, n = (np.asarray(v)[row] for v in (self.constant, self.stochastic, self.noise))
        s0, s2, eta0 = np.asarray(self.shape)[row].T
        shape2 = np.where(inside, s0 + s2 * (abs_eta - eta0) ** 2, 0.0) ** 2
        return shape2 * c * c, shape2 * s * s, shape2 * n * n

    def __call__(self, energy: np.ndarray, abs_eta: np.ndarray) -> np.ndarray:
        a, b, c = self.coefficients(abs_eta)
        return np.sqrt(a * energy * energy + b * np.maximum(energy, 0.0) + c)


@dataclass(frozen=True)
class Geometry:
    magnetic_field: float = declared(required=True)  # T, along +z
    #: mm: tracks are made inside, calorimeters start at its surface
    tracker_radius: float = declared(required=True, above=0.0)
    tracker_half_length: float = declared(required=True, above=0.0)
    #: mm: particles made beyond are not seen
    calorimeter_radius: float = declared(required=True, above=0.0)
    calorimeter_half_length: float = declared(required=True, above=0.0)
    #: GeV: softer visible particles are not simulated
    particle_pt_min: float = declared(required=True, minimum=0.0)


@dataclass(frozen=True)
class TrackClass:
    """Tracking efficiency and pT resolution of charged hadrons, electrons or muons."""

    efficiency: BinnedTable = declared(required=True, reader=lambda t, name, _:
                                       _binned(t.table(name, required=True), at_most=1.0))
    resolution: TrackResolution = declared(required=True, reader=lambda t, name, _:
                                           _track_resolution(t.table(name, required=True)))


@dataclass(frozen=True)
class Tracking:
    efficiency_scale: float = declared(required=True, minimum=0.0)
    resolution_scale: float = declared(required=True, minimum=0.0)
    impact_parameter_scale: float = declared(required=True, minimum=0.0)
    charged_hadron: TrackClass = declared(required=True)
    electron: TrackClass = declared(required=True)
    muon: TrackClass = declared(required=True)
    d0_resolution: BinnedTable = declared(required=True, reader=lambda t, name, _:
                                          _binned(t.table(name, required=True)))  # mm
    dz_resolution: BinnedTable = declared(required=True, reader=lambda t, name, _:
                                          _binned(t.table(name, required=True)))  # mm


@dataclass(frozen=True)
class CalorimeterSpec:
    """One calorimeter (ECAL or HCAL): cells, thresholds and resolution."""

    energy_min: float = declared(required=True, minimum=0.0)
    significance_min: float = declared(required=True, minimum=0.0)
    #: On unless set off (no dataclass default: the setting is always written out).
    smear_cell_center: bool = declared(reader=lambda t, name, _: t.boolean(name, True))
    energy_scale: float = declared(required=True, above=0.0)
    resolution_scale: float = declared(required=True, minimum=0.0)
    #: Segments (eta_lo, eta_hi, rings, phi_bins): equal η rings, each of equal φ cells.
    geometry: tuple[tuple[float, float, int, int], ...] = declared(
        required=True, reader=lambda t, name, _: _segments(t, name))
    resolution: EnergyResolution = declared(required=True, reader=lambda t, name, _:
                                            _energy_resolution(t.table(name, required=True)))


@dataclass(frozen=True)
class Identification:
    """Probability that a candidate is reconstructed as what it is (see the preset)."""

    electron: BinnedTable = declared(required=True, reader=lambda t, name, _:
                                     _binned(t.table(name, required=True), at_most=1.0))
    muon: BinnedTable = declared(required=True, reader=lambda t, name, _:
                                 _binned(t.table(name, required=True), at_most=1.0))
    photon: BinnedTable = declared(required=True, reader=lambda t, name, _:
                                   _binned(t.table(name, required=True), at_most=1.0))


@dataclass(frozen=True)
class DetectorSpec:
    """The full parameters (a preset with a card's and a variation's overrides merged in,
    see :func:`resolve`), checked."""

    preset: str = declared()  # checked by :func:`resolve`
    geometry: Geometry = declared(required=True, check=lambda t, name, geometry:
                                  _check_encloses(t.table(name), geometry))
    tracking: Tracking = declared(required=True)
    #: Energy shares (|PDG id|, ECAL, HCAL); ``default_fraction`` for every other id.
    fractions: tuple[tuple[int, float, float], ...] = declared(
        section="calorimeter", reader=lambda t, name, _: _fractions(t, name)[0])
    default_fraction: tuple[float, float] = declared(
        section="calorimeter", key="fractions", reader=lambda t, name, _:
        _fractions(t, name)[1])
    ecal: CalorimeterSpec = declared(required=True, section="calorimeter")
    hcal: CalorimeterSpec = declared(required=True, section="calorimeter")
    identification: Identification = declared(required=True)


# ------------------------------------------------------------------------------ reading


def preset_text(name: str) -> str:
    """The TOML text of a shipped preset (``cards/detectors/NAME.toml``)."""
    return resources.files("resim.cards").joinpath("detectors", f"{name}.toml").read_text()


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``override``'s keys: tables merge key by key, other values replace."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def with_preset(t: Table, presets: tuple[str, ...], text: Callable[[str], str]
                ) -> dict[str, Any]:
    """A card table (``t``) as the full raw parameters: its preset (``preset``, default
    the first of ``presets``; ``text(name)`` its TOML) with the table's keys merged in."""
    name = t.raw.get("preset", presets[0])
    if name not in presets:
        t.fail("preset", f"must be one of {', '.join(presets)}; got {name!r}")
    raw = merge(tomllib.loads(text(name)), {k: v for k, v in t.raw.items() if k != "preset"})
    raw["preset"] = name
    return raw


def resolve(t: Table) -> dict[str, Any]:
    """A card's ``[detector]`` table (``t``) as the full raw parameters: its preset with
    the card's keys merged in (checked by :func:`parse`)."""
    return with_preset(t, PRESETS, preset_text)


def _floats(t: Table, name: str, length: int | None = None, minimum: float | None = None,
            increasing: bool = False) -> tuple[float, ...]:
    value = t.raw.get(name)
    if value is None:
        t.fail(name, "missing")
    ok = isinstance(value, list) and value and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    if not ok or (length is not None and len(value) != length):
        what = f"{length} numbers" if length is not None else "numbers"
        t.fail(name, f"must be a list of {what}, got {value!r}")
    if not all(map(math.isfinite, value)):
        t.fail(name, f"must be finite numbers, got {value!r}")
    if minimum is not None and min(value) < minimum:
        t.fail(name, f"values must be >= {minimum}, got {value!r}")
    if increasing and any(b <= a for a, b in itertools.pairwise(value)):
        t.fail(name, f"must increase, got {value!r}")
    return tuple(float(v) for v in value)


def _rows(t: Table, name: str, n_rows: int, n_cols: int, minimum: float | None = None,
          at_most: float | None = None) -> tuple[tuple[float, ...], ...]:
    value = t.raw.get(name)
    shape_ok = isinstance(value, list) and len(value) == n_rows and all(
        isinstance(r, list) and len(r) == n_cols and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in r) for r in value)
    if not shape_ok:
        t.fail(name, f"must be {n_rows} lists of {n_cols} numbers (one per bin), "
               f"got {value!r}")
    flat = [v for r in value for v in r]
    if not all(map(math.isfinite, flat)):
        t.fail(name, f"must be finite numbers, got {value!r}")
    if minimum is not None and min(flat) < minimum:
        t.fail(name, f"values must be >= {minimum}")
    if at_most is not None and max(flat) > at_most:
        t.fail(name, f"values must be <= {at_most}")
    return tuple(tuple(float(v) for v in r) for r in value)


def _binned(t: Table, at_most: float | None = None) -> BinnedTable:
    t.allow(*declared_keys(BinnedTable))
    eta = _floats(t, "eta_edges", minimum=0.0, increasing=True)
    pt = _floats(t, "pt_edges", minimum=0.0, increasing=True)
    if len(eta) < 2:
        t.fail("eta_edges", "needs at least two edges")
    return BinnedTable(eta, pt, _rows(t, "values", len(eta) - 1, len(pt), 0.0, at_most))


def _track_resolution(t: Table) -> TrackResolution:
    t.allow(*declared_keys(TrackResolution))
    eta = _floats(t, "eta_edges", minimum=0.0, increasing=True)
    n = len(eta) - 1
    return TrackResolution(eta, _floats(t, "constant", n, 0.0), _floats(t, "slope", n, 0.0))


def _energy_resolution(t: Table) -> EnergyResolution:
    t.allow(*declared_keys(EnergyResolution))
    eta = _floats(t, "eta_edges", minimum=0.0, increasing=True)
    n = len(eta) - 1
    shape = _rows(t, "shape", n, 3)
    return EnergyResolution(eta, _floats(t, "constant", n, 0.0), _floats(t, "stochastic", n, 0.0),
                            _floats(t, "noise", n, 0.0),
                            tuple((a, b, c) for a, b, c in shape))


def _segments(t: Table, name: str) -> tuple[tuple[float, float, int, int], ...]:
    """A calorimeter's ``geometry``: segments [eta_lo, eta_hi, rings, phi_bins], each
    starting where the last ended."""
    geometry = t.raw.get(name)
    segments: list[tuple[float, float, int, int]] = []
    ok = isinstance(geometry, list) and geometry
    for seg in geometry if ok else ():
        good = (isinstance(seg, list) and len(seg) == 4
                and all(isinstance(v, int | float) and not isinstance(v, bool) for v in seg[:2])
                and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                        for v in seg[2:]) and seg[1] > seg[0])
        if not good or (segments and seg[0] != segments[-1][1]):
            t.fail(name, "must be a list of [eta_lo, eta_hi, rings, phi_bins] "
                   f"segments, each starting where the last ended; got {seg!r}")
        segments.append((float(seg[0]), float(seg[1]), int(seg[2]), int(seg[3])))
    if not segments:
        t.fail(name, f"must be a non-empty list of segments, got {geometry!r}")
    return tuple(segments)


def _fractions(cal: Table, name: str
               ) -> tuple[tuple[tuple[int, float, float], ...], tuple[float, float]]:
    """The calorimeter's ``fractions``: the listed shares, and the ``default`` ones."""
    t = cal.table(name, required=True)
    default = None
    fractions: list[tuple[int, float, float]] = []
    for key in t:
        pair = t.numbers(key, (), 2, minimum=0.0)
        if sum(pair) > 1.0 + 1e-9:
            t.fail(key, f"ECAL and HCAL shares add up to more than 1: {list(pair)}")
        if key == "default":
            default = pair
        elif key.isdigit():
            fractions.append((int(key), pair[0], pair[1]))
        else:
            t.fail(key, "keys are |PDG ids| (e.g. 22) or `default`")
    if default is None:
        t.fail("default", "missing (the shares of every particle not listed)")
    return tuple(sorted(fractions)), (default[0], default[1])


def _check_encloses(g: Table, geometry: Geometry) -> None:
    if (geometry.calorimeter_radius < geometry.tracker_radius
            or geometry.calorimeter_half_length < geometry.tracker_half_length):
        g.fail("calorimeter_radius", "the calorimeters must enclose the tracker")


def parse(t: Table) -> DetectorSpec:
    """Check the full raw parameters (from :func:`resolve`) and build the spec; problems
    raise ``t``'s error naming the key."""
    return read(DetectorSpec, t)


__all__ = ["PRESETS", "BinnedTable", "CalorimeterSpec", "DetectorSpec", "EnergyResolution",
           "Geometry", "Identification", "TrackClass", "TrackResolution", "Tracking",
           "merge", "parse", "preset_text", "resolve", "with_preset"]

"""The ``[pileup]`` card section: minimum-bias collisions and their mitigation, as frozen
dataclasses.

A card's ``[pileup]`` names a shipped preset (``preset = "jetclass2"``, the default:
``cards/pileup/jetclass2.toml``, JetClass-II's ⟨μ⟩ = 50 with PUPPI, every number with its
source) and may override any of its keys by the same key path; a variation may override
keys again with its own ``pileup = { ... }`` table (``mu = 140``, ``mitigation = "none"``),
except those of ``[library]``, which every variation shares. Tables merge key by key.

What the numbers do lives in :mod:`resim.generators.pileup` (the library and the overlay)
and :mod:`resim.generators.mitigation` (vertex association, CHS, PUPPI); ``docs/cards.md``
describes every key.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from .detector_spec import with_preset
from .schema import Table, declared, declared_keys, read

if TYPE_CHECKING:
    from .card import _Table

#: Presets shipped in ``cards/pileup/``.
PRESETS = ("jetclass2",)
MITIGATIONS = ("puppi", "chs", "none")


@dataclass(frozen=True)
class PuppiSpec:
    """PUPPI's parameters, per |η| region ``[eta_edges[i], eta_edges[i+1])``."""

    # One value per region, so read by :func:`_puppi`, which knows how many.
    eta_edges: tuple[float, ...] = declared(required=True)
    cone: tuple[float, ...] = declared(required=True)
    rms_pt_min: tuple[float, ...] = declared(required=True)
    rms_scale: tuple[float, ...] = declared(required=True)
    neutral_pt_min: tuple[float, ...] = declared(required=True)
    neutral_pt_slope: tuple[float, ...] = declared(required=True)
    low_pileup_correction: tuple[bool, ...] = declared(required=True)
    min_dr: float = declared(required=True)  # below the smallest cone
    weight_min: float = declared(required=True, minimum=0.0, at_most=1.0)
    vertex_efficiency: float = declared(required=True, above=0.0)


def _library_settings(t: Any, name: str) -> tuple[Any, ...]:
    """Pythia settings: ``t`` is a card's table (``resim.card._Table`` reads them)."""
    return tuple(t.settings(name))


@dataclass(frozen=True)
class LibrarySpec:
    """The minimum-bias events made once per run: how many, and the Pythia settings
    (``PythiaSetting``s, on top of the card's ``[pythia]``) that make them."""

    events: int = declared(required=True, minimum=1)
    settings: tuple[Any, ...] = declared(reader=lambda t, name, _: _library_settings(t, name))


@dataclass(frozen=True)
class PileupSpec:
    """The full parameters (a preset with a card's and a variation's overrides merged in,
    see :func:`resolve`), checked; ``t.settings`` reads the library's Pythia settings, so
    the table read is a card's (:class:`resim.card._Table`)."""

    preset: str = declared()  # checked by :func:`resolve`
    #: mean number of minimum-bias collisions per realization (Poisson)
    mu: float = declared(required=True, minimum=0.0, at_most=1000.0)
    mitigation: str = declared(required=True, choices=MITIGATIONS)
    library: LibrarySpec = declared(required=True)
    #: mm: Gaussian spread of collision vertices along the beam
    z_width: float = declared(required=True, section="luminous_region", minimum=0.0)
    # Track-vertex association (CHS): a vertex's fit takes the tracks within
    # dz_significance * dz_err of it with |d0| < d0_significance * d0_err; a track in no
    # fit is the primary vertex's within dz_max (mm).
    dz_significance: float = declared(required=True, section="chs", above=0.0)
    d0_significance: float = declared(required=True, section="chs", above=0.0)
    dz_max: float = declared(required=True, section="chs", minimum=0.0)
    puppi: PuppiSpec = declared(required=True, reader=lambda t, name, _:
                                _puppi(t.table(name, required=True)))


# ------------------------------------------------------------------------------ reading


def preset_text(name: str) -> str:
    """The TOML text of a shipped preset (``cards/pileup/NAME.toml``)."""
    return resources.files("resim.cards").joinpath("pileup", f"{name}.toml").read_text()


def resolve(t: Table) -> dict[str, Any]:
    """A card's ``[pileup]`` table (``t``) as the full raw parameters: its preset with the
    card's keys merged in (checked by :func:`parse`)."""
    return with_preset(t, PRESETS, preset_text)


def _per_region(t: Table, name: str, n: int) -> tuple[float, ...]:
    if name not in t.raw:
        t.fail(name, "missing")
    return t.numbers(name, (), n, minimum=0.0)


def _booleans(t: Table, name: str, n: int) -> tuple[bool, ...]:
    value = t.raw.get(name)
    if not (isinstance(value, list) and len(value) == n
            and all(isinstance(v, bool) for v in value)):
        t.fail(name, f"must be a list of {n} true/false values (one per region), got {value!r}")
    return tuple(value)


def _puppi(t: Table) -> PuppiSpec:
    t.allow(*declared_keys(PuppiSpec))
    edges = t.raw.get("eta_edges")
    if not (isinstance(edges, list) and len(edges) >= 2 and all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in edges)
            and edges[0] >= 0 and all(b > a for a, b in itertools.pairwise(edges))):
        t.fail("eta_edges", f"must be at least two increasing numbers >= 0, got {edges!r}")
    n = len(edges) - 1
    cone = _per_region(t, "cone", n)
    if min(cone) <= 0 or max(cone) > 1.5:
        t.fail("cone", f"must be in (0, 1.5], got {list(cone)}")
    return read(
        PuppiSpec, t, eta_edges=tuple(float(v) for v in edges), cone=cone,
        rms_pt_min=_per_region(t, "rms_pt_min", n),
        rms_scale=_per_region(t, "rms_scale", n),
        neutral_pt_min=_per_region(t, "neutral_pt_min", n),
        neutral_pt_slope=_per_region(t, "neutral_pt_slope", n),
        low_pileup_correction=_booleans(t, "low_pileup_correction", n),
        min_dr=t.number("min_dr", None, minimum=0.0, below=min(cone), required=True),
    )


def parse(t: _Table) -> PileupSpec:
    """Check the full raw parameters (from :func:`resolve`, with a variation's overrides
    merged in) and build the spec; problems raise ``t``'s error naming the key."""
    return read(PileupSpec, t)


__all__ = ["MITIGATIONS", "PRESETS", "LibrarySpec", "PileupSpec", "PuppiSpec", "parse",
           "preset_text", "resolve"]

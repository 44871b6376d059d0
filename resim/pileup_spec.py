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
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from .detector_spec import required_number, with_preset
from .schema import Table

if TYPE_CHECKING:
    from .card import _Table

#: Presets shipped in ``cards/pileup/``.
PRESETS = ("jetclass2",)
MITIGATIONS = ("puppi", "chs", "none")


@dataclass(frozen=True)
class PuppiSpec:
    """PUPPI's parameters, per |η| region ``[eta_edges[i], eta_edges[i+1])``."""

    eta_edges: tuple[float, ...]
    cone: tuple[float, ...]
    rms_pt_min: tuple[float, ...]
    rms_scale: tuple[float, ...]
    neutral_pt_min: tuple[float, ...]
    neutral_pt_slope: tuple[float, ...]
    low_pileup_correction: tuple[bool, ...]
    min_dr: float
    weight_min: float
    vertex_efficiency: float


@dataclass(frozen=True)
class LibrarySpec:
    """The minimum-bias events made once per run: how many, and the Pythia settings
    (``PythiaSetting``s, on top of the card's ``[pythia]``) that make them."""

    events: int
    settings: tuple[Any, ...]


@dataclass(frozen=True)
class PileupSpec:
    preset: str
    mu: float  # mean number of minimum-bias collisions per realization (Poisson)
    mitigation: str  # one of MITIGATIONS
    library: LibrarySpec
    z_width: float  # mm: Gaussian spread of collision vertices along the beam
    # Track-vertex association (CHS): a vertex's fit takes the tracks within
    # dz_significance * dz_err of it with |d0| < d0_significance * d0_err; a track in no
    # fit is the primary vertex's within dz_max (mm).
    dz_significance: float
    d0_significance: float
    dz_max: float
    puppi: PuppiSpec


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
    t.allow("eta_edges", "cone", "rms_pt_min", "rms_scale", "neutral_pt_min",
            "neutral_pt_slope", "low_pileup_correction", "min_dr", "weight_min",
            "vertex_efficiency")
    edges = t.raw.get("eta_edges")
    if not (isinstance(edges, list) and len(edges) >= 2 and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in edges)
            and edges[0] >= 0 and all(b > a for a, b in itertools.pairwise(edges))):
        t.fail("eta_edges", f"must be at least two increasing numbers >= 0, got {edges!r}")
    n = len(edges) - 1
    cone = _per_region(t, "cone", n)
    if min(cone) <= 0 or max(cone) > 1.5:
        t.fail("cone", f"must be in (0, 1.5], got {list(cone)}")
    return PuppiSpec(
        eta_edges=tuple(float(v) for v in edges), cone=cone,
        rms_pt_min=_per_region(t, "rms_pt_min", n),
        rms_scale=_per_region(t, "rms_scale", n),
        neutral_pt_min=_per_region(t, "neutral_pt_min", n),
        neutral_pt_slope=_per_region(t, "neutral_pt_slope", n),
        low_pileup_correction=_booleans(t, "low_pileup_correction", n),
        min_dr=required_number(t, "min_dr", minimum=0.0, below=min(cone)),
        weight_min=required_number(t, "weight_min", minimum=0.0, at_most=1.0),
        vertex_efficiency=required_number(t, "vertex_efficiency", above=0.0),
    )


def parse(t: _Table) -> PileupSpec:
    """Check the full raw parameters (from :func:`resolve`, with a variation's overrides
    merged in) and build the spec; problems raise ``t``'s error naming the key. ``t`` is
    a card table (:class:`resim.card._Table`: it reads the library's Pythia settings)."""
    t.allow("preset", "mu", "mitigation", "library", "luminous_region", "chs", "puppi")
    lib = t.table("library", required=True)
    lib.allow("events", "settings")
    region = t.table("luminous_region", required=True)
    region.allow("z_width")
    chs = t.table("chs", required=True)
    chs.allow("dz_significance", "d0_significance", "dz_max")
    events = lib.integer("events", None, minimum=1)
    if events is None:
        lib.fail("events", "missing")
    settings = lib.settings("settings")  # a card table reads Pythia settings
    return PileupSpec(
        preset=t.raw["preset"],
        mu=required_number(t, "mu", minimum=0.0, at_most=1000.0),
        mitigation=t.choice("mitigation", None, MITIGATIONS, required=True),
        library=LibrarySpec(events=events, settings=settings),
        z_width=required_number(region, "z_width", minimum=0.0),
        dz_significance=required_number(chs, "dz_significance", above=0.0),
        d0_significance=required_number(chs, "d0_significance", above=0.0),
        dz_max=required_number(chs, "dz_max", minimum=0.0),
        puppi=_puppi(t.table("puppi", required=True)),
    )


__all__ = ["MITIGATIONS", "PRESETS", "LibrarySpec", "PileupSpec", "PuppiSpec", "parse",
           "preset_text", "resolve"]

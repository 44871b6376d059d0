"""Run cards: one TOML file says everything about a generation run.

A card is read with :mod:`tomllib` into frozen dataclasses and checked before any event
is made. Every problem is a :class:`CardError` that names the card file and the key path,
e.g. ``top.toml: variations.fsr_up.realizations: must be an integer >= 1, got 0``.
Pythia settings are checked by Pythia itself later (see ``resim.generators.settings``),
but each keeps the key path it came from so those errors name it too.

The schema, section by section, is documented in ``docs/cards.md``.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, cast

from . import detector_spec, pileup_spec
from .detector_spec import DetectorSpec
from .pileup_spec import PileupSpec
from .schema import SchemaError, Shipped, Table, declared, read, rule_of

#: Variation names used across the project (cards, trainer configs, plots).
STANDARD_VARIATIONS = (
    "nominal", "seed", "fsr_up", "fsr_down", "isr_up", "isr_down",
    "vincia", "tune", "hadronization", "cr",
)

#: Pythia setting groups a ``stage = "hadronization"`` variation may change: it re-uses
#: a frozen parton-level event, so anything upstream of string breaking is out of reach.
HADRONIZATION_PREFIXES = (
    "StringZ:", "StringPT:", "StringFlav:", "StringFragmentation:",
    "MiniStringFragmentation:", "FragmentationSystems:", "HadronLevel:",
    "ParticleDecays:", "Fragmentation:", "HadronVertex:",
)

#: Settings of Pythia's resonance-decay filter: a hook on the hard process, so they belong in
#: ``[hard_process]`` (the upstream), where resim installs the hook.
DECAY_FILTER = "ResonanceDecayFilter:"

JET_ALGORITHMS = ("antikt", "kt", "cambridge")
STAGES = ("shower", "hadronization", "detector", "pileup")
#: Stages that make no Pythia event: they re-use a base variation's particle-level events.
REUSING_STAGES = ("detector", "pileup")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
DEFAULT_OUTPUT = Path("resim.h5")
#: Most hard events in a run: a truth object's group id, ``event * 16 + k``
#: (:data:`resim.truth.MAX_OBJECTS` = 16), is stored as int64.
MAX_EVENTS = 2**59
#: Largest run seed: seeds are stored, and derived, as 64-bit integers.
MAX_SEED = 2**63 - 1
#: Shipped sets of variations a card takes with ``[variations] preset = "NAME"``
#: (``cards/variations/NAME.toml``).
VARIATION_PRESETS = ("standard",)


class CardError(SchemaError):
    """A card problem, reported as ``<card file>: <key path>: <what is wrong>``."""

    @property
    def card(self) -> str:
        return self.source


@dataclass(frozen=True)
class PythiaSetting:
    """One Pythia ``readString`` line and the card key path it came from."""

    key: str  # e.g. 'variations.fsr_up.settings."TimeShower:renormMultFac"'
    line: str  # e.g. 'TimeShower:renormMultFac = 0.25'
    #: The value as written in the card (None for settings resim makes itself): Pythia
    #: reads ``1.5`` for an integer setting as 1 and a list for a number as its first
    #: entry without complaint, so the type is checked against the setting's kind.
    value: Any = field(default=None, compare=False)

    @property
    def name(self) -> str:
        return self.line.split("=", 1)[0].strip()


def _pythia_settings(t: Table, name: str, default: Any) -> tuple[PythiaSetting, ...]:
    assert isinstance(t, _Table)  # a card's tables read Pythia settings
    return t.settings(name)


@dataclass(frozen=True)
class Beams:
    id_a: int = declared(2212)
    id_b: int = declared(2212)
    ecm: float = declared(13600.0, above=0.0)


@dataclass(frozen=True)
class HardProcess:
    """Pythia process switches, or a Les Houches event file to read (or both)."""

    settings: tuple[PythiaSetting, ...] = declared((), reader=_pythia_settings)
    #: Relative to the card, so a card and its events travel together.
    lhe: Path | None = declared(None, reader=lambda t, name, _: _lhe(t, name))


@dataclass(frozen=True)
class Decay:
    """Forced decay of one particle: channels with any of ``any`` or exactly ``match``."""

    pdg: int  # the key of its table
    any: tuple[int, ...] = declared(())
    match: tuple[tuple[int, ...], ...] = declared(())

    def pythia_settings(self, key: str) -> tuple[PythiaSetting, ...]:
        lines = [f"{self.pdg}:onMode = off"]
        if self.any:
            lines.append(f"{self.pdg}:onIfAny = {' '.join(map(str, self.any))}")
        lines += [f"{self.pdg}:onIfMatch = {' '.join(map(str, m))}" for m in self.match]
        return tuple(PythiaSetting(key, line) for line in lines)


@dataclass(frozen=True)
class Objects:
    """Which hard-process particles seed groups, and the label of each."""

    pdg: tuple[int, ...] = declared(reader=lambda t, name, _: _object_ids(t, name))
    labels: dict[str, tuple[int, ...]] = declared(reader=lambda t, name, _: _labels(t, name))
    #: Require every quark, gluon and charged lepton from the object's decay within the jet
    #: radius of the jet axis (as JetClass does), so that a ``top`` label means a full top
    #: jet and a ``tbl`` one holds its b quark and its lepton (never the neutrino).
    contained: bool = declared(False)

    def label_of(self, pdg: int) -> int:
        """Index of the label of a particle with this PDG id (sign ignored)."""
        for i, ids in enumerate(self.labels.values()):
            if abs(pdg) in ids:
                return i
        raise KeyError(pdg)


@dataclass(frozen=True)
class Jets:
    algorithm: str = declared("antikt", choices=JET_ALGORITHMS)
    radius: float = declared(0.8, above=0.0, at_most=3.0)
    pt_min: float = declared(500.0, minimum=0.0)
    pt_max: float = declared(math.inf, above=0.0)
    abs_eta_max: float = declared(2.0, above=0.0)
    #: Visible final-state particles below this pT are not clustered (RS3L: 1 GeV).
    constituent_pt_min: float = declared(0.0, minimum=0.0)
    #: A jet matches an object within this ΔR; defaults to the jet radius.
    match_radius: float | None = declared(None, above=0.0)

    @property
    def match_dr(self) -> float:
        return self.radius if self.match_radius is None else self.match_radius


@dataclass(frozen=True)
class Variation:
    """A named set of downstream Pythia settings and how many realizations to make.

    ``stage = "shower"`` re-runs everything after the hard process (ISR, FSR, MPI,
    hadronization, decays). ``stage = "hadronization"`` re-hadronizes one frozen
    parton-level event per hard event (made with the card's base settings), which is
    several times cheaper and isolates hadronization effects. ``stage = "detector"``
    re-runs only the detector, with new seeds, on the particle-level event of variation
    ``base`` (its realization 0); ``stage = "pileup"`` overlays a new draw of pileup on
    that event and its detector response (the base's detector seeds).
    """

    name: str  # the key of its table
    realizations: int = declared(1, minimum=1)
    stage: str = declared("shower", choices=STAGES)
    settings: tuple[PythiaSetting, ...] = declared((), reader=_pythia_settings)
    #: The detector this variation's realizations go through: the card's ``[detector]``
    #: with the variation's own ``detector = { ... }`` overrides (None: no detector; read
    #: by :func:`_variation_detector`).
    detector: DetectorSpec | None = declared(None)
    #: ``stage = "detector"`` or ``"pileup"``: the variation whose particle-level events
    #: are re-used.
    base: str | None = declared(None, reader=lambda t, name, _: _base(t, name))
    #: The pileup overlaid on its realizations at detector level: the card's ``[pileup]``
    #: with the variation's own ``pileup = { ... }`` overrides (None: no pileup; read by
    #: :func:`_variation_pileup`).
    pileup: PileupSpec | None = declared(None)


@dataclass(frozen=True)
class Run:
    events: int = declared(100, minimum=1, at_most=MAX_EVENTS)
    seed: int = declared(1, minimum=0, at_most=MAX_SEED)
    output: Path = declared(DEFAULT_OUTPUT)
    #: Hard events re-simulated together; output does not depend on it.
    batch_events: int | None = declared(None, minimum=1)
    #: Each realization is retried with a new derived seed this many times at most.
    max_attempts: int = declared(10, minimum=1)
    #: Finished blocks are committed to disk within this long (seconds) of the last
    #: commit: a crash loses at most this much work, and a commit costs tens of
    #: milliseconds however small.
    commit_seconds: float = declared(10.0, minimum=0.0)
    #: Also write every realization's event record as HepMC3 (``OUTPUT.parts/hepmc/``).
    hepmc: bool = declared(False)


@dataclass(frozen=True)
class Card:
    """A parsed card: each field a section (``pythia``: its ``settings``), read by
    :func:`parse_card`."""

    path: Path
    text: str
    run: Run = declared()
    beams: Beams = declared()
    hard_process: HardProcess = declared(reader=lambda t, name, _: _hard_process(t, name))
    objects: Objects = declared(reader=lambda t, name, _: _objects(t, name))
    jets: Jets = declared(reader=lambda t, name, _: _jets(t, name))
    #: Read by :func:`_variations` (with the card's detector and pileup).
    variations: tuple[Variation, ...] = declared()
    pythia: tuple[PythiaSetting, ...] = declared((), section="pythia", key="settings",
                                                 reader=_pythia_settings)
    decays: tuple[Decay, ...] = declared((), reader=lambda t, name, _: _decays(t, name))
    #: The card's ``[detector]`` (None: particle-level jets only).
    detector: DetectorSpec | None = declared(None)
    #: The card's ``[pileup]`` (None: no pileup).
    pileup: PileupSpec | None = declared(None)
    #: Defaults the card relies on for what matters most (``run.events = 100``, a whole
    #: ``[jets]`` section, ...), shown when a run starts so they are never a surprise.
    unset: tuple[str, ...] = field(default=(), compare=False)
    labels: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(self.objects.labels))

    @property
    def variation_names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.variations)

    @property
    def realizations_per_event(self) -> int:
        return sum(v.realizations for v in self.variations)

    def decay_settings(self) -> tuple[PythiaSetting, ...]:
        return tuple(
            s for d in self.decays for s in d.pythia_settings(f"decays.{d.pdg}")
        )

    def with_overrides(
        self, events: int | None = None, seed: int | None = None, output: Path | None = None
    ) -> Card:
        """The card with command-line options applied (they win over the file)."""
        run = self.run
        if events is not None:
            _check_option(self.path, "--events", "events", events)
            run = dataclasses.replace(run, events=events)
        if seed is not None:
            _check_option(self.path, "--seed", "seed", seed)
            run = dataclasses.replace(run, seed=seed)
        if output is not None:
            run = dataclasses.replace(run, output=Path(output))
        given = {f"run.{k} " for k, v in (("events", events), ("seed", seed),
                                          ("output", output)) if v is not None}
        unset = tuple(u for u in self.unset if not u.startswith(tuple(given)))
        return dataclasses.replace(self, run=run, unset=unset)

    def with_variations(self, names: Sequence[str]) -> Card:
        """The card with only the variations ``names`` (in the card's order); its text
        stays the whole card's (see :func:`restrict_variations` for a text to match)."""
        missing = [n for n in names if n not in self.variation_names]
        if missing:
            raise CardError(self.path, "variations", f"no variation {', '.join(missing)} "
                            f"(the card has {', '.join(self.variation_names)})")
        kept = tuple(v for v in self.variations if v.name in names)
        for v in kept:
            if v.base is not None and v.base not in names:
                raise CardError(self.path, f"variations.{v.name}.base", f"re-uses {v.base!r}, "
                                "which the restriction leaves out")
        return dataclasses.replace(self, variations=kept)

    def summary(self) -> dict[str, Any]:
        """The effective run parameters, JSON-ready (stored beside the card text)."""
        return {
            "events": self.run.events,
            "seed": self.run.seed,
            "variations": {v.name: v.realizations for v in self.variations},
            "stages": {v.name: v.stage for v in self.variations},
            "labels": list(self.labels),
            "lhe": str(self.hard_process.lhe) if self.hard_process.lhe else None,
            # The effective parameters, so a data set says which detector made it even
            # after a preset changes.
            "detector": None if self.detector is None else {
                # every variation of a card with [detector] has one
                v.name: dataclasses.asdict(cast(DetectorSpec, v.detector))
                for v in self.variations},
            "pileup": None if self.pileup is None else {
                v.name: _pileup_summary(v.pileup) for v in self.variations},
        }


# --------------------------------------------------------------------------- reading


_SHIPPED = Shipped("resim.cards", "", "card", CardError)


def card_text(name: str | Path) -> str:
    """The text of a card file or shipped card (a file that is not text: a CardError)."""
    return _SHIPPED.read(name)[1]


def resolve_card_path(name: str | Path) -> Path:
    """A card file path, or the name of a shipped card (``smoke`` → ``resim/cards/smoke.toml``)."""
    return _SHIPPED.resolve(name)


def shipped_cards() -> list[str]:
    return _SHIPPED.names()


def load_card(name: str | Path) -> Card:
    """Read and check a card; raises :class:`CardError` on any problem."""
    path, text = _SHIPPED.read(name)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise CardError(path, "", f"not valid TOML: {err}") from None
    return parse_card(raw, path=path, text=text)


def parse_card(raw: dict[str, Any], path: Path, text: str = "") -> Card:
    t = _Table(path, raw, "")
    card = read(Card, t, path=path, text=text, variations=(), detector=None, pileup=None)
    detector_raw = (detector_spec.resolve(t.table("detector")) if "detector" in raw
                    else None)
    detector = (None if detector_raw is None
                else detector_spec.parse(_Table(path, detector_raw, "detector.")))
    pileup_raw = pileup_spec.resolve(t.table("pileup")) if "pileup" in raw else None
    pileup = None if pileup_raw is None else pileup_spec.parse(
        _Table(path, pileup_raw, "pileup."))
    if pileup is not None and detector is None:
        t.fail("pileup", "pileup is seen only by a detector (particle-level jets stay "
               "pileup-free): add a [detector] section (e.g. preset = \"cms\")")
    variations = _variations(_with_preset(t.table("variations", required=True)),
                             detector_raw, detector, pileup_raw, pileup)
    for s in (*card.pythia, *(s for v in variations for s in v.settings)):
        if s.name.startswith(DECAY_FILTER):
            raise CardError(path, s.key, "the resonance-decay filter acts on the hard process: "
                            "set it in [hard_process] settings")
    return dataclasses.replace(card, variations=variations, detector=detector, pileup=pileup,
                               unset=_unset(raw, card.run, card.jets))


def _unset(raw: dict[str, Any], run: Run, jets: Jets) -> tuple[str, ...]:
    """The defaults a card takes for how many events, which seed, where to, and for a whole
    ``[jets]`` section."""
    given = raw.get("run", {})
    unset = [f"run.{key} = {getattr(run, key)!s}" if key != "output" else
             f'run.output = "{run.output}"'
             for key in ("events", "seed", "output") if key not in given]
    if "jets" not in raw:
        unset.append(f"[jets] {jets.algorithm} R = {jets.radius}, pT > {jets.pt_min:g} GeV, "
                     f"|eta| < {jets.abs_eta_max:g}, constituents above "
                     f"{jets.constituent_pt_min:g} GeV")
    return tuple(unset)


def _hard_process(card: Table, name: str) -> HardProcess:
    t = card.table(name, required=True)
    hard = read(HardProcess, t)
    if hard.lhe is None and not hard.settings:
        t.fail("", "give process switches in `settings` or a Les Houches file in `lhe`")
    return hard


def _lhe(t: Table, name: str) -> Path | None:
    lhe_name = t.string(name, None)
    if lhe_name is None:
        return None
    lhe = (Path(t.source).parent / lhe_name).resolve()
    if not lhe.is_file():
        t.fail(name, f"Les Houches file not found: {lhe}")
    return lhe


def _decays(card: Table, section: str) -> tuple[Decay, ...]:
    t = card.table(section)
    decays = []
    for name in t:
        pdg = _pdg_id(name)
        if pdg is None:
            t.fail(name, "decay tables are keyed by PDG id, e.g. [decays.6]")
        decay = read(Decay, t.table(name, required=True), pdg=pdg)
        if not decay.any and not decay.match:
            t.fail(name, "give `any = [ids]` or `match = [[ids], ...]`")
        decays.append(decay)
    return tuple(decays)


def _pdg_id(name: str) -> int | None:
    try:
        return int(name)
    except ValueError:
        return None


def _object_ids(t: Table, name: str) -> tuple[int, ...]:
    pdg = t.integers(name)
    if not pdg:
        t.fail(name, "list at least one PDG id of a hard-process object")
    return tuple(abs(i) for i in pdg)


def _labels(t: Table, name: str) -> dict[str, tuple[int, ...]]:
    lt = t.table(name, required=True)
    labels = {}
    for label in lt:
        if not _NAME.match(label):
            lt.fail(label, "label names are lower-case identifiers")
        labels[label] = tuple(abs(i) for i in lt.integers(label))
    return labels


def _objects(card: Table, name: str) -> Objects:
    t = card.table(name, required=True)
    objects = read(Objects, t)
    for i in t.raw["pdg"]:  # as written: the message shows it so
        owners = [n for n, ids in objects.labels.items() if abs(i) in ids]
        if len(owners) != 1:
            t.table("labels").fail("", f"object PDG id {i} must have exactly one label, "
                                   f"has {owners or 'none'}")
    return objects


def _jets(card: Table, name: str) -> Jets:
    t = card.table(name)
    jets = read(Jets, t)
    if jets.pt_max <= jets.pt_min:
        t.fail("pt_max", f"must be above pt_min = {jets.pt_min}, got {jets.pt_max}")
    return jets


def _variations(t: _Table, detector_raw: dict[str, Any] | None,
                detector: DetectorSpec | None, pileup_raw: dict[str, Any] | None,
                pileup: PileupSpec | None) -> tuple[Variation, ...]:
    variations = []
    for name in t:
        key = t.key(name)
        if not _NAME.match(name):
            raise CardError(t.source, key, "variation names are lower-case identifiers")
        v = t.table(name, required=True)
        variation = read(Variation, v, name=name, detector=None, pileup=None)
        _check_stage_settings(v, variation)
        variations.append(dataclasses.replace(
            variation, detector=_variation_detector(v, detector_raw, detector),
            pileup=_variation_pileup(v, pileup_raw, pileup)))
    if not variations:
        raise CardError(t.source, t.here, "define at least one variation")
    if len(variations) > 127:
        raise CardError(t.source, t.here, "at most 127 variations")
    return tuple(_with_base(t, v, variations) for v in variations)


def _base(v: Table, name: str) -> str | None:
    """A variation's ``base`` (its ``stage``, read before, is known good)."""
    if v.raw.get("stage", "shower") not in REUSING_STAGES:
        if name in v.raw:
            v.fail(name, "only a stage = \"detector\" or \"pileup\" variation has a base "
                   "variation")
        return None
    return v.string(name, None)


def _check_stage_settings(v: Table, variation: Variation) -> None:
    """Only hadronization and decay settings for a hadronization stage, none for a stage
    that makes no Pythia event."""
    stage, settings = variation.stage, variation.settings
    if stage == "hadronization":
        for s in settings:
            particle_data = s.name.split(":")[0].isdigit()  # e.g. "511:tau0"
            if not (s.name.startswith(HADRONIZATION_PREFIXES) or particle_data):
                raise CardError(v.source, s.key, "not a hadronization or decay setting; a "
                                "stage = \"hadronization\" variation re-uses the parton shower")
    if stage in REUSING_STAGES and settings:
        raise CardError(v.source, settings[0].key, f"a stage = \"{stage}\" variation "
                        f"re-runs only the {stage}: Pythia settings do not apply")


def variations_preset_text(name: str) -> str:
    """The TOML text of a shipped set of variations (``cards/variations/NAME.toml``)."""
    return resources.files("resim.cards").joinpath("variations", f"{name}.toml").read_text()


def _with_preset(t: _Table) -> _Table:
    """A card's ``[variations]`` with its ``preset``'s variations first (a card's own
    table of a preset variation's name replaces it in its place), then the card's others."""
    if "preset" not in t.raw:
        return t
    name = t.raw["preset"]
    if name not in VARIATION_PRESETS:
        t.fail("preset", f"must be one of {', '.join(VARIATION_PRESETS)}; got {name!r}")
    own = {k: v for k, v in t.raw.items() if k != "preset"}
    preset = tomllib.loads(variations_preset_text(name))["variations"]
    return _Table(t.source, {**preset, **own}, t.prefix)


#: A table header line, e.g. ``[variations.fsr_up]``: its dotted name in group 1.
_HEADER = re.compile(r"^\[\s*([A-Za-z0-9_.\"-]+)\s*\]")


def _blocks(text: str) -> list[tuple[list[str], str]]:
    """``text`` cut before each table header: (dotted name parts, text) of each piece
    (``[]`` for what precedes the first table)."""
    blocks: list[tuple[list[str], str]] = [([], "")]
    for line in text.splitlines(keepends=True):
        header = _HEADER.match(line)
        if header:
            blocks.append((header.group(1).split("."), line))
        else:
            blocks[-1] = (blocks[-1][0], blocks[-1][1] + line)
    return blocks


def _variation_of(parts: list[str]) -> str | None:
    return parts[1] if len(parts) > 1 and parts[0] == "variations" else None


def restrict_variations(text: str, keep: Sequence[str]) -> str:
    """The card ``text`` with its variations preset written out as tables and without the
    ``[variations.X]`` tables whose X is not in ``keep``: a card of its own.

    Works on the text (a card's comments stay), so it only handles variations written as
    tables; check the result against :meth:`Card.with_variations`.
    """
    blocks = _blocks(text)
    own = {_variation_of(p) for p, _ in blocks} - {None}
    written: list[tuple[list[str], str]] = []
    for parts, block in blocks:
        preset = (tomllib.loads(block).get("variations", {}).get("preset")
                  if parts == ["variations"] else None)
        if preset in VARIATION_PRESETS:
            # the preset's tables in its order, each replaced by the card's own
            for p, b in _blocks(variations_preset_text(preset))[1:]:
                name = _variation_of(p)
                written += [(p, b)] if name not in own else [
                    (q, c) for q, c in blocks if _variation_of(q) == name]
        elif not (_variation_of(parts) in own and (parts, block) in written):
            written.append((parts, block))
    return "".join(block for parts, block in written
                   if _variation_of(parts) in (None, *keep))


def _variation_section(v: _Table, section: str, card_raw: dict[str, Any] | None,
                       card: Any, parse: Any, hint: str, shared: dict[str, str]) -> Any:
    """The card's ``[section]`` (``card``, raw: ``card_raw``) with the variation's
    ``section = { ... }`` merged in and parsed; ``shared`` keys are the card's alone."""
    if card_raw is None:
        if section in v.raw or v.raw.get("stage") == section:
            v.fail(section if section in v.raw else "stage",
                   f"needs the card's [{section}] section ({hint})")
        return None
    if section not in v.raw:
        return card
    override = v.table(section)
    for key, why in shared.items():
        if key in override.raw:
            override.fail(key, why)
    own = [k for k in card_raw if k not in shared]  # what a variation may override
    for key in override.raw:
        if key not in own:
            override.fail(key, f"unknown key (allowed here: {', '.join(own)})")
    raw = detector_spec.merge(card_raw, override.raw)
    return parse(_Table(v.source, raw, override.prefix))


def _variation_detector(v: _Table, card_raw: dict[str, Any] | None,
                        card: DetectorSpec | None) -> DetectorSpec | None:
    """The card's detector with the variation's ``detector = { ... }`` merged in."""
    return _variation_section(
        v, "detector", card_raw, card, detector_spec.parse, 'e.g. preset = "cms"',
        {"preset": "the preset is chosen in [detector]; a variation overrides its "
                   "parameters"})


def _variation_pileup(v: _Table, card_raw: dict[str, Any] | None,
                      card: PileupSpec | None) -> PileupSpec | None:
    """The card's pileup with the variation's ``pileup = { ... }`` merged in."""
    why = ("is the card's: every variation draws from the same pileup library; a "
           "variation overrides mu, mitigation, luminous_region, chs and puppi")
    return _variation_section(v, "pileup", card_raw, card, pileup_spec.parse, "e.g. mu = 50",
                              {"preset": why, "library": why})


def _pileup_summary(spec: PileupSpec | None) -> dict[str, Any] | None:
    if spec is None:
        return None
    out = dataclasses.asdict(spec)
    out["library"]["settings"] = [s.line for s in spec.library.settings]
    return out


def _with_base(t: _Table, v: Variation, variations: list[Variation]) -> Variation:
    """A detector- or pileup-stage variation's base: as given, else ``nominal``, else the
    first variation Pythia makes."""
    if v.stage not in REUSING_STAGES:
        return v
    makers = [w.name for w in variations if w.stage not in REUSING_STAGES]
    base = v.base or ("nominal" if "nominal" in makers else next(iter(makers), None))
    if base not in makers:
        raise CardError(t.source, f"{t.key(v.name)}.base", "must name a variation Pythia "
                        f"makes (stage shower or hadronization): {', '.join(makers) or 'none'}; "
                        f"got {base!r}")
    return dataclasses.replace(v, base=base)


def pythia_value(value: Any) -> str:
    """A TOML value as Pythia reads it (booleans are on/off)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list):
        return " ".join(pythia_value(v) for v in value)
    return str(value)


class _Table(Table):
    """A card table: the shared checks, CardErrors, and tables of Pythia settings."""

    error = CardError

    def settings(self, name: str) -> tuple[PythiaSetting, ...]:
        """A table of Pythia settings, ``{"Key:name" = value}``, as readString lines."""
        table = self.table(name)
        out = []
        for setting, value in table.raw.items():
            if isinstance(value, dict) or (isinstance(value, list) and any(
                    isinstance(v, dict | list) for v in value)):
                table.fail(setting, "a Pythia setting takes a number, string or on/off, "
                           f"got {value!r}")
            out.append(PythiaSetting(table.key(setting), f"{setting} = {pythia_value(value)}",
                                     value))
        return tuple(out)


def _check_option(card: Path, option: str, name: str, value: int) -> None:
    """A command-line value for ``run.NAME``, checked by that key's declared bounds and
    worded as the card's own keys are."""
    rule = rule_of(Run, name)
    _Table(card, {option: value}).integer(option, None, cast(int, rule.minimum),
                                          at_most=cast(int, rule.at_most))

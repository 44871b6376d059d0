"""Training configs: one TOML file says how to pre-train or fine-tune an encoder.

A config is read with :mod:`tomllib` into frozen dataclasses and checked before anything is
built. Every problem is a :class:`ConfigError` naming the file and the key path, e.g.
``rs3l_part.toml: optimizer.lr: must be > 0, got -0.001`` — unknown keys, wrong types,
values out of range, unknown encoder or method names and settings those do not take.

Sections (all optional except as noted; ``docs/training.md`` has the full reference)::

    [encoder]    name = "part" | "transformer" | "particlenet"; every other key is a
                 keyword of the encoder (sizes, heads, k, ...). Required by ``resim train``.
    [method]     name = "rs3l" | "vicreg" | ...; other keys are the method's keywords.
                 Required by ``resim train``.
    [finetune]   head, head_hidden, head_dropout, backbone ("floating" | "fixed"), fraction.
    [data]       max_particles, batch_size, splits, classes, max_jets, variations, level,
                 [data.views] (count, mode, variations, source).
    [optimizer]  name ("adam" | "adamw"), lr, weight_decay, betas, grad_clip,
                 [optimizer.schedule] (name "step" | "cosine" | "constant", ...).
    [run]        epochs, seed, checkpoint_every, log_every, device, num_workers, threads,
                 validate, monitor_every, sync_batchnorm.
    [augment]    names = ["rotate", "smear", ...] (JetCLR augmentations applied to each
                 view, with ``data.views.source = "augment"`` or ``"both"``), and one
                 sub-table of settings per name (``[augment.smear] strength = 0.05``).

Command-line overrides are ``key.path=value`` strings (``--set optimizer.lr=3e-4``); the
value is read as a TOML value, or taken as a plain string when it is not one
(``--set encoder.name=transformer``). They are applied to the parsed TOML before the
checks, so an override is checked exactly like the file, and errors name it.
"""

from __future__ import annotations

import dataclasses
import inspect
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from resim.schema import SchemaError, Shipped, Table, declared, read

from .frames import FRAMES

HEADS = ("linear", "mlp")
BACKBONES = ("floating", "fixed")
OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("step", "cosine", "constant")
DEVICES = ("auto", "cpu", "cuda")
VIEW_SOURCES = ("resim", "augment", "both")
VIEW_MODES = ("any", "nominal_plus")
LEVELS = ("auto", "particle", "detector")


class ConfigError(SchemaError):
    """A config problem, reported as ``<config file>: <key path>: <what is wrong>``."""


# --------------------------------------------------------------------------- the schema


@dataclass(frozen=True)
class EncoderConfig:
    """Which encoder, and the keywords it is built with (``build_encoder(name, F, **settings)``)."""

    name: str
    settings: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MethodConfig:
    """Which pre-training objective, and its keywords (``build_method(name, enc, **settings)``)."""

    name: str
    settings: Mapping[str, Any] = field(default_factory=dict)


def _check_pt_scale(t: Table, name: str, pt_scale: tuple[float, float]) -> None:
    if not 0 < pt_scale[0] <= pt_scale[1]:
        t.fail(name, f"must be [low, high] with 0 < low <= high, got {list(pt_scale)}")


def _check_betas(t: Table, name: str, betas: tuple[float, float]) -> None:
    if not all(b < 1 for b in betas):
        t.fail(name, f"must be < 1, got {list(betas)}")


def _check_splits(t: Table, name: str, splits: tuple[float, float, float]) -> None:
    if abs(sum(splits) - 1.0) > 1e-6:
        t.fail(name, f"train, val, test fractions must add up to 1, got {list(splits)}")
    if splits[0] <= 0:
        t.fail(name, "the train fraction must be > 0")


def _read_classes(t: Table, name: str, default: Any) -> dict[str, tuple[str, ...]]:
    """``data.classes``: class name = [label names], at least two classes (or none)."""
    table = t.table(name)
    classes = {}
    for cname in table:
        labels = table.strings(cname, (), required=True)
        if not labels:
            table.fail(cname, "list at least one label name")
        classes[cname] = labels
    if classes and len(classes) < 2:
        t.fail(name, "a classifier needs at least two classes")
    return classes


@dataclass(frozen=True)
class ViewsConfig:
    """How the views of one group are chosen for pre-training (the loader's ``ViewPolicy``).

    ``count`` views per group (1 only for objectives without positive pairs, MPM and
    JEPA, where a view is simply a jet); ``mode`` how they are drawn (``"any"``: any
    ``count`` distinct realizations; ``"nominal_plus"``: the nominal one plus others);
    ``variations`` restricts the draw to named variations (empty: all), which makes
    RS3L's seed-only or FSR-only ablations a config change; ``source`` says whether
    positives are re-simulated (``"resim"``), hand-made augmentations of one jet
    (``"augment"``), or both. ``boost`` and ``pt_scale``: every view, whatever its
    source, boosted along the beam to a rapidity uniform in ± boost and its momenta
    scaled log-uniformly in pt_scale, independently (``resim.train.frames``).
    """

    count: int = declared(2, minimum=1)
    mode: str = declared("any", choices=VIEW_MODES)
    variations: tuple[str, ...] = declared(())
    source: str = declared("resim", choices=VIEW_SOURCES)
    # a rapidity: no detector measures jets beyond a few units, and at ~90 float32
    # momenta overflow (NaN inputs, then a failed eigenvalue solve mid-training)
    boost: float = declared(0.0, minimum=0.0, at_most=10.0)
    pt_scale: tuple[float, float] = declared((1.0, 1.0), length=2, minimum=0.0,
                                             check=_check_pt_scale)


@dataclass(frozen=True)
class DataConfig:
    """What the loaders read and how they batch it.

    ``batch_size`` counts jets per process and step (for pre-training: groups x views).
    ``splits`` are the train/val/test fractions of hard events. ``classes`` maps a class name
    to the label names it merges (empty: every label its own class). ``variations`` are
    the variations fine-tuning and evaluation read (empty: the loader's default, nominal).
    ``max_jets`` caps how many jets are read per data set file (None: all). ``level``
    chooses the jets: ``particle``, ``detector`` or ``auto`` (particle-level jets if every
    file has them, else detector-level); an encoder pre-trained on detector-level jets
    takes JetClass's full per-particle features, with the impact-parameter uncertainties.
    ``frame``:
    the encoder's inputs as measured (``"lab"``) or in the jet frame (``"jet"``: boosted
    to rapidity 0, scaled to a fixed pT; ``resim.train.frames``). ``pretrain_fraction``:
    pre-training uses this fraction of the training split's groups (nested subsets).
    """

    max_particles: int = declared(64, minimum=1)
    batch_size: int = declared(200, minimum=2)
    splits: tuple[float, float, float] = declared((0.8, 0.1, 0.1), length=3, minimum=0.0,
                                                  check=_check_splits)
    classes: Mapping[str, tuple[str, ...]] = declared(default_factory=dict,
                                                     reader=_read_classes)
    variations: tuple[str, ...] = declared(())
    max_jets: int | None = declared(None, minimum=1)
    frame: str = declared("lab", choices=FRAMES)
    pretrain_fraction: float = declared(1.0, above=0.0, at_most=1.0)
    views: ViewsConfig = declared(ViewsConfig())
    level: str = declared("auto", choices=LEVELS)


@dataclass(frozen=True)
class ScheduleConfig:
    """The learning-rate schedule, applied per optimiser step.

    ``step``: multiply by ``gamma`` every ``step_epochs`` epochs (RS3L: x0.5 every 50).
    ``cosine``: linear warm-up over ``warmup_epochs`` (may be fractional), then cosine
    decay to ``min_lr_ratio`` x lr at the last step. ``constant``: neither.
    ``warmup_epochs`` applies to all three.
    """

    name: str = declared("step", choices=SCHEDULES)
    step_epochs: int = declared(50, minimum=1)
    gamma: float = declared(0.5, above=0.0, at_most=1.0)
    warmup_epochs: float = declared(0.0, minimum=0.0)
    min_lr_ratio: float = declared(0.0, minimum=0.0, at_most=1.0)


@dataclass(frozen=True)
class OptimizerConfig:
    """Adam or AdamW; ``grad_clip`` > 0 clips the global gradient norm."""

    name: str = declared("adam", choices=OPTIMIZERS)
    lr: float = declared(1e-3, above=0.0)
    weight_decay: float = declared(0.0, minimum=0.0)
    betas: tuple[float, float] = declared((0.9, 0.999), length=2, minimum=0.0,
                                          check=_check_betas)
    grad_clip: float = declared(0.0, minimum=0.0)
    schedule: ScheduleConfig = declared(ScheduleConfig())


@dataclass(frozen=True)
class RunConfig:
    """Epochs, seeds, checkpoints, logging, device.

    ``checkpoint_every`` writes ``last.pt`` every that many optimiser steps as well as at
    each epoch end (0: epoch ends only). ``log_every``: steps per ``metrics.csv`` row.
    ``device``: ``"auto"`` takes CUDA (with bf16 autocast) when present, else CPU.
    ``threads``: torch's intra-op CPU threads (0: torch's default, one per core; at most
    1024). On a machine shared with other jobs, fewer threads than cores can be many times
    faster.
    ``monitor_every``: pre-training measures its representation on the validation split's
    nominal jets every that many epochs (kNN accuracy, labels used only there; effective
    rank; 0: never).
    """

    epochs: int = declared(100, minimum=1)
    seed: int = declared(0, minimum=0)
    checkpoint_every: int = declared(0, minimum=0)
    log_every: int = declared(10, minimum=1)
    device: str = declared("auto", choices=DEVICES)
    num_workers: int = declared(0, minimum=0)
    threads: int = declared(0, minimum=0, at_most=1024)  # more fail to start
    validate: bool = declared(True)
    monitor_every: int = declared(1, minimum=0)
    sync_batchnorm: bool = declared(False)


@dataclass(frozen=True)
class FinetuneConfig:
    """The classifier put on the encoder for fine-tuning (RS3L's options).

    ``backbone``: ``"floating"`` trains the encoder too, ``"fixed"`` freezes it (its
    BatchNorm statistics calibrated on the training jets first, then kept, with dropout
    off). ``fraction`` of the training split's groups carry labels (1 %, 10 %, 100 %
    studies). ``backbone_lr``: the learning rate of a floating *pre-trained* encoder (the
    head trains at ``optimizer.lr``; RS3L fine-tunes at 1e-4); an encoder trained from
    scratch trains at ``optimizer.lr`` throughout.
    """

    head: str = declared("linear", choices=HEADS)
    head_hidden: tuple[int, ...] = declared((128,), minimum=1)
    head_dropout: float = declared(0.1, minimum=0.0, below=1.0)
    backbone: str = declared("floating", choices=BACKBONES)
    fraction: float = declared(1.0, above=0.0, at_most=1.0)
    backbone_lr: float = declared(1e-4, above=0.0)


@dataclass(frozen=True)
class AugmentConfig:
    """JetCLR-style augmentations (``resim.train.augment``) applied to every view, in order."""

    names: tuple[str, ...] = ()
    settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Config:
    """A whole training config, with where it came from (for errors and checkpoints)."""

    source: str
    text: str = ""
    overrides: tuple[str, ...] = ()
    # The sections (None: not in the file); the field order is that of the checkpoint's
    # stored config.
    encoder: EncoderConfig | None = declared(None, reader=lambda t, name, _:
                                             _encoder(t.table(name)) if name in t.raw else None)
    method: MethodConfig | None = declared(None, reader=lambda t, name, _:
                                           _method(t.table(name)) if name in t.raw else None)
    finetune: FinetuneConfig | None = declared(None, reader=lambda t, name, _: read(
        FinetuneConfig, t.table(name)) if name in t.raw else None)
    data: DataConfig = declared(default_factory=DataConfig)
    optimizer: OptimizerConfig = declared(default_factory=OptimizerConfig)
    run: RunConfig = declared(default_factory=RunConfig)
    augment: AugmentConfig = declared(default_factory=AugmentConfig,
                                      reader=lambda t, name, _: _augment(t.table(name)))

    def to_dict(self) -> dict[str, Any]:
        """The effective settings, JSON-ready (tuples as lists, no file text)."""
        out = _plain(dataclasses.asdict(self))
        for key in ("source", "text", "overrides"):
            out.pop(key)
        return out

    def with_overrides(self, overrides: Sequence[str]) -> Config:
        """This config re-read with more ``key.path=value`` overrides (checked as the file)."""
        if not overrides:
            return self
        return parse_config(self.text, self.source, (*self.overrides, *overrides))

    def error(self, key: str, message: str) -> ConfigError:
        """An error about ``key`` found after reading (e.g. building the encoder), naming
        the override that set it, as reading does."""
        return config_error(self.source, self.overrides, key, message)

    def require(self, *sections: str) -> None:
        """Raise if a section a command needs is missing (``[encoder]``, ``[method]``)."""
        for name in sections:
            if getattr(self, name) is None:
                raise ConfigError(self.source, name, "missing section")


# --------------------------------------------------------------------------- reading


def config_text(name: str | Path) -> str:
    """The text of a config file or shipped config (not text: a ConfigError)."""
    return _SHIPPED.read(name)[1]


def resolve_config_path(name: str | Path) -> Path:
    """A config file path, or the name of a shipped config (``rs3l_part``)."""
    return _SHIPPED.resolve(name)


def shipped_configs() -> list[str]:
    """Names of the configs in ``train/configs`` (``resim configs`` lists them)."""
    return _SHIPPED.names()


def load_config(name: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Read and check a config file (or shipped config name), with command-line overrides."""
    path, text = _SHIPPED.read(name)
    return parse_config(text, str(path), tuple(overrides))


def parse_config(text: str, source: str = "<config>", overrides: Sequence[str] = ()) -> Config:
    """Check ``text`` (TOML) with ``overrides`` applied; ``source`` names it in errors."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(source, "", f"not valid TOML: {err}") from None
    for item in overrides:
        apply_override(raw, item, source)
    try:
        return _parse(raw, text, source, tuple(overrides))
    except ConfigError as err:
        raise config_error(source, overrides, err.key, err.message) from None


def config_error(source: str, overrides: Sequence[str], key: str, message: str) -> ConfigError:
    """The error for ``key`` of config ``source``, naming the override when the bad value
    came from the command line."""
    for item in reversed(overrides):
        name = item.partition("=")[0].strip()
        if key == name or key.startswith(name + "."):
            return ConfigError(f"{source} (--set {item})", key, message)
    return ConfigError(source, key, message)


def _parse(raw: dict[str, Any], text: str, source: str, overrides: tuple[str, ...]) -> Config:
    config = read(Config, ConfigTable(source, raw, ""), source=source, text=text,
                  overrides=overrides)
    views, augment, method = config.data.views, config.augment, config.method
    if augment.names and views.source == "resim":
        raise ConfigError(source, "data.views.source", "[augment] lists augmentations but "
                          "views.source is 'resim'; set it to 'both' (augmented "
                          "re-simulated views) or 'augment' (augmented copies of one jet)")
    if not augment.names and views.source != "resim":
        raise ConfigError(source, "augment.names",
                          f"data.views.source = {views.source!r} needs augmentations")
    if method is not None and views.count < 2:
        from .methods import METHODS

        if METHODS[method.name].needs_positives:
            raise ConfigError(source, "data.views.count",
                              f"method {method.name!r} needs positive pairs: at least 2 views "
                              f"per group, got {views.count} (1 is for objectives without "
                              "positives: mpm, jepa)")
    return config


def apply_override(raw: dict[str, Any], item: str, source: str) -> None:
    """Set ``raw[a][b][c] = value`` for the override ``"a.b.c=value"`` (in place)."""
    key, sep, text = item.partition("=")
    path = [k.strip() for k in key.split(".")]
    if not sep or not all(path):
        raise ConfigError(source, f"--set {item}", "overrides look like key.path=value")
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()
    table = raw
    for depth, name in enumerate(path[:-1]):
        table = table.setdefault(name, {})
        if not isinstance(table, dict):
            raise ConfigError(source, f"--set {item}",
                              f"{'.'.join(path[:depth + 1])} is not a table")
    table[path[-1]] = value


# --------------------------------------------------------------------------- sections


def _encoder(t: Table) -> EncoderConfig:
    from .encoders import ENCODERS

    name = t.choice("name", None, sorted(ENCODERS), required=True)
    settings = {k: _frozen(t.raw[k]) for k in t if k != "name"}
    _check_settings(ENCODERS[name], settings, t, f"encoder {name!r}")
    return EncoderConfig(name, settings)


def _method(t: Table) -> MethodConfig:
    from .methods import METHODS

    name = t.choice("name", None, sorted(METHODS), required=True)
    settings = {k: _frozen(t.raw[k]) for k in t if k != "name"}
    _check_settings(METHODS[name], settings, t, f"method {name!r}")
    return MethodConfig(name, settings)


def _augment(t: Table) -> AugmentConfig:
    from .augment import AUGMENTATIONS, build_augmentation
    from .encoders.base import SettingError

    names = t.strings("names", ())
    for name in t:
        if name != "names" and name not in AUGMENTATIONS:
            raise ConfigError(t.source, t.key(name), f"unknown key (allowed here: names, "
                              f"{', '.join(AUGMENTATIONS)})")
    settings = {name: _frozen(t.table(name).raw) for name in t if name != "names"}
    try:
        build_augmentation(list(names), **settings)
    except SettingError as err:
        raise ConfigError(t.source, f"{t.here}.{err.key}", str(err)) from None
    except (TypeError, ValueError) as err:
        raise ConfigError(t.source, t.prefix.rstrip("."), str(err)) from None
    return AugmentConfig(names, settings)


# --------------------------------------------------------------------------- helpers


def _frozen(value: Any) -> Any:
    """TOML lists as tuples (recursively), so settings can sit in frozen dataclasses."""
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, dict):
        return {k: _frozen(v) for k, v in value.items()}
    return value


def _plain(value: Any) -> Any:
    """The inverse of :func:`_frozen`, for JSON."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _check_settings(factory: Callable[..., Any], settings: Mapping[str, Any], t: Table,
                    what: str) -> None:
    """Unknown settings (the registries' check) and values of the wrong type, by key path.

    Types are judged against the keyword's default: an int default takes integers, a
    float default numbers, a tuple default lists, a str default strings.
    """
    from .encoders.base import check_settings

    for key in settings:
        try:
            check_settings(factory, {key: settings[key]}, what)
        except ValueError as err:
            raise ConfigError(t.source, t.key(key), str(err)) from None
    params = inspect.signature(factory).parameters
    fixed = factory.keywords if isinstance(factory, partial) else {}
    for key, value in settings.items():
        default = fixed.get(key, params[key].default)
        if not _same_kind(value, default):
            raise ConfigError(t.source, t.key(key),
                              f"{what}: must be {_kind_name(default)}, got {value!r}")


def _same_kind(value: Any, default: Any) -> bool:
    if default is inspect.Parameter.empty or default is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, int):
        return isinstance(value, int)
    if isinstance(default, float):
        return isinstance(value, int | float)
    if isinstance(default, tuple | list):
        return isinstance(value, tuple)
    return isinstance(value, type(default))


def _kind_name(default: Any) -> str:
    if isinstance(default, bool):
        return "true or false"
    return {int: "an integer", float: "a number", str: "a string"}.get(
        type(default), "a list" if isinstance(default, tuple | list) else type(default).__name__)


class ConfigTable(Table):
    """A table of a training or study config: the shared key checks (resim.schema),
    raising ConfigErrors."""

    error = ConfigError


_SHIPPED = Shipped("resim.train", "configs", "config", ConfigError)

"""A study config: what :mod:`resim.study` reads from one TOML file, checked.

:func:`parse_study` turns the text into a :class:`Study` (frozen dataclasses); every
problem is a :class:`~resim.train.config.ConfigError` naming the file and the key, as for
the training configs. The shipped studies are ``train/configs/study/NAME.toml``
(``small``, ``tiny``); they document every key.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from resim.schema import Shipped, Table, declared, declared_keys, read
from resim.train.config import ConfigError, ConfigTable


@dataclass(frozen=True)
class Sample:
    """One physics sample: a card, the hard events to generate, in how many shards."""

    name: str
    card: str = declared(required=True)  # shipped card name or path
    events: int = declared(minimum=1, required=True)
    shards: int = declared(1, minimum=1)
    seed: int | None = declared(None, minimum=0)  # None: the card's
    #: A test-only sample of this many hard events (0: none).
    test_events: int = declared(0, minimum=0)
    test_shards: int = declared(1, minimum=1)


_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
SPLITS = ("test", "val", "train")


def _samples(samples_t: ConfigTable) -> tuple[Sample, ...]:
    samples = tuple(_sample(samples_t, name) for name in samples_t)
    if not samples:
        samples_t.fail("", "define at least one [samples.NAME]")
    for s in samples:
        if s.shards > s.events:
            samples_t.table(s.name).fail(
                "shards", f"more shards ({s.shards}) than events ({s.events})")
        if s.test_events and s.test_shards > s.test_events:
            samples_t.table(s.name).fail(
                "test_shards", f"more shards ({s.test_shards}) than events ({s.test_events})")
    return samples


def _sample(samples_t: ConfigTable, name: str) -> Sample:
    if not _NAME.match(name):
        samples_t.fail(name, "sample names are lower-case identifiers")
    s = samples_t.table(name)
    s.allow(*declared_keys(Sample))
    if "events" not in s.raw:  # before the card: of both, the events are named
        s.fail("events", "missing")
    return read(Sample, s, name=name)


def _classes(cl: ConfigTable) -> dict[str, tuple[str, ...]]:
    classes = {name: cl.strings(name, (), required=True) for name in cl}
    if len(classes) < 2:
        cl.fail("", "give at least two classes (name = [labels])")
    return classes


def _objectives(obj_t: ConfigTable) -> dict[str, str]:
    objectives = {name: obj_t.string(name, None, required=True) for name in obj_t}
    if not objectives:
        obj_t.fail("", "name at least one objective (name = \"training config\")")
    return objectives


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _distinct(values: list[Any]) -> bool:
    return len(set(values)) == len(values)


def _sizes(pre: Table, name: str, default: tuple[float, ...]) -> tuple[float, ...]:
    """``pretrain.sizes``: distinct fractions in (0, 1], 1.0 among them; sorted."""
    given = pre.raw.get(name, list(default))
    valid = isinstance(given, list) and bool(given) and \
        all(_is_number(f) and 0 < f <= 1 for f in given) and _distinct(given)
    if not valid or 1.0 not in [float(f) for f in given]:
        pre.fail(name, "must be distinct fractions in (0, 1], 1.0 among them (the "
                 f"pre-training fine-tuned), got {given!r}")
    return tuple(sorted(float(f) for f in given))


def _fractions(ft: Table, name: str, default: tuple[float, ...]) -> tuple[float, ...]:
    """``finetune.fractions``: distinct numbers in (0, 1]; sorted."""
    given = ft.raw.get(name, list(default))
    numeric = isinstance(given, list) and all(_is_number(f) for f in given)
    fractions = [float(f) for f in given] if numeric else []
    if not fractions or not all(0 < f <= 1 for f in fractions) or not _distinct(fractions):
        ft.fail(name, f"must be distinct numbers in (0, 1], got {given!r}")
    return tuple(sorted(fractions))


def _distinct_seeds(st: Table, name: str, seeds: tuple[int, ...]) -> None:
    if not seeds or not _distinct(list(seeds)):
        st.fail(name, f"must be distinct seeds, got {list(seeds)}")


def _in_table(reader: Any) -> Any:
    """A reader of a key that is a table of names: ``reader(table)``."""
    return lambda t, name, default: reader(t.table(name))


@dataclass(frozen=True, kw_only=True)
class Study:
    """A parsed study config (``train/configs/study/*.toml`` documents the keys): each key
    declared once, with its section, in the order a file's mistakes are looked for."""

    source: str
    text: str
    # [study]
    seeds: tuple[int, ...] = declared((0,), section="study", minimum=0, check=_distinct_seeds)
    jobs: int = declared(1, section="study", minimum=1)
    threads: int = declared(1, section="study", minimum=0)
    variations: tuple[str, ...] = declared(section="study", required=True)
    reference: str = declared("nominal", section="study")  # one of the variations
    #: overrides of every training config
    common: tuple[str, ...] = declared((), section="study", key="set")
    heartbeat: float = declared(300.0, section="study", above=0.0)
    # [samples.NAME] and [classes]
    samples: tuple[Sample, ...] = declared(required=True, reader=_in_table(_samples))
    classes: Mapping[str, tuple[str, ...]] = declared(required=True,
                                                      reader=_in_table(_classes))
    # [pretrain]
    pretrain_epochs: int = declared(10, section="pretrain", key="epochs", minimum=1)
    pretrain_set: tuple[str, ...] = declared((), section="pretrain", key="set")
    #: name -> training config
    objectives: Mapping[str, str] = declared(required=True, section="pretrain",
                                             reader=_in_table(_objectives))
    #: fractions of the pre-training groups (probed)
    sizes: tuple[float, ...] = declared((1.0,), section="pretrain", reader=_sizes)
    # [finetune]
    finetune_config: str = declared("finetune", section="finetune", key="config")
    fractions: tuple[float, ...] = declared((0.01, 0.1, 1.0), section="finetune",
                                            reader=_fractions)
    finetune_epochs: int = declared(10, section="finetune", key="epochs", minimum=1)
    min_steps: int = declared(0, section="finetune", minimum=0)
    baseline: str = declared("scratch", section="finetune")  # "" = no baseline
    finetune_set: tuple[str, ...] = declared((), section="finetune", key="set")
    # [evaluate]
    split: str = declared("test", section="evaluate", choices=SPLITS)
    bootstrap: int = declared(200, section="evaluate", minimum=0)
    #: row pairs the report compares directly (read by :func:`parse_study`, which knows
    #: the rows)
    compare: tuple[tuple[str, str], ...] = declared((), section="evaluate")
    bins: int = declared(0, section="evaluate", minimum=0)  # 0: evaluate_shift's default

    @property
    def rows(self) -> tuple[str, ...]:
        """The rows of every table: the baseline first, then the objectives."""
        return ((self.baseline,) if self.baseline else ()) + tuple(self.objectives)


# Beside the training configs they name. Not moved with this package on purpose: a study's
# path is written into its cards' text, so every stage fingerprint depends on it, and a
# move would make every existing study output refuse its rerun ("other settings").
_SHIPPED = Shipped("resim.train", "configs/study", "study", ConfigError)


def study_text(name: str | Path) -> str:
    """The text of a study file or shipped study (not text: a ConfigError)."""
    return _SHIPPED.read(name)[1]


def resolve_study_path(name: str | Path) -> Path:
    """A study file, or the name of a shipped one (``train/configs/study/NAME.toml``)."""
    return _SHIPPED.resolve(name)


def shipped_studies() -> list[str]:
    return _SHIPPED.names()


def load_study(name: str | Path) -> Study:
    """Read and check a study file; every problem is a ConfigError naming the key."""
    path, text = _SHIPPED.read(name)
    return parse_study(text, str(path))


def parse_study(text: str, source: str = "<study>") -> Study:
    """The :class:`Study` of a config's ``text`` (``source`` names it in errors).

    The keys are checked in the order :class:`Study` declares them, then how they go
    together, so the first mistake of a file is the one reported.
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(source, "", f"not valid TOML: {err}") from None
    top = ConfigTable(source, raw, "")
    study = read(Study, top, source=source, text=text, compare=())
    st = top.table("study")
    if study.reference not in study.variations:
        st.fail("reference", f"{study.reference!r} is not in study.variations "
                f"{list(study.variations)}")
    if not _distinct(list(study.variations)):
        st.fail("variations", "names a variation twice")
    if study.baseline in study.objectives:
        top.table("finetune").fail("baseline",
                                   f"{study.baseline!r} is also an objective's name")
    rows = [study.baseline, *study.objectives]
    return replace(study, compare=_compare(top.table("evaluate"), rows))


def _is_pair_of(pair: Any, rows: list[str]) -> bool:
    return isinstance(pair, list) and len(pair) == 2 and all(r in rows for r in pair) \
        and pair[0] != pair[1]


def _compare(ev: ConfigTable, rows: list[str]) -> tuple[tuple[str, str], ...]:
    """``evaluate.compare``: pairs of different rows (the baseline or objectives)."""
    compare = ev.raw.get("compare", [])
    if not isinstance(compare, list) or not all(_is_pair_of(p, rows) for p in compare):
        ev.fail("compare", "must be a list of pairs of rows [\"a\", \"b\"] (rows: "
                f"{', '.join(r for r in rows if r)}), got {compare!r}")
    return tuple((a, b) for a, b in compare)


__all__ = ["Sample", "Study", "load_study", "parse_study", "resolve_study_path",
           "shipped_studies"]

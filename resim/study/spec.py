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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resim.schema import Shipped, declared, declared_keys, read
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


@dataclass(frozen=True)
class Study:
    """A parsed study config (see ``train/configs/study/*.toml`` for the keys)."""

    source: str
    text: str
    samples: tuple[Sample, ...]
    variations: tuple[str, ...]
    reference: str
    classes: Mapping[str, tuple[str, ...]]
    objectives: Mapping[str, str]  # name -> training config
    seeds: tuple[int, ...] = (0,)
    jobs: int = 1
    threads: int = 1
    common: tuple[str, ...] = ()  # overrides of every training config
    pretrain_epochs: int = 10
    pretrain_set: tuple[str, ...] = ()
    sizes: tuple[float, ...] = (1.0,)  # fractions of the pre-training groups (probed)
    finetune_config: str = "finetune"
    fractions: tuple[float, ...] = (0.01, 0.1, 1.0)
    finetune_epochs: int = 10
    min_steps: int = 0
    baseline: str = "scratch"  # "" = no baseline
    finetune_set: tuple[str, ...] = ()
    split: str = "test"
    bootstrap: int = 200
    bins: int = 0  # histogram bins of the JS distances (0: evaluate_shift's default)
    compare: tuple[tuple[str, str], ...] = ()  # row pairs the report compares directly
    heartbeat: float = 300.0

    @property
    def rows(self) -> tuple[str, ...]:
        """The rows of every table: the baseline first, then the objectives."""
        return ((self.baseline,) if self.baseline else ()) + tuple(self.objectives)


# Beside the training configs they name. Not moved with this package on purpose: a study's
# path is written into its cards' text, so every stage fingerprint depends on it, and a
# move would make every existing study output refuse its rerun ("other settings").
_SHIPPED = Shipped("resim.train", "configs/study", "study", ConfigError)


def resolve_study_path(name: str | Path) -> Path:
    """A study file, or the name of a shipped one (``train/configs/study/NAME.toml``)."""
    return _SHIPPED.resolve(name)


def shipped_studies() -> list[str]:
    return _SHIPPED.names()


def load_study(name: str | Path) -> Study:
    """Read and check a study file; every problem is a ConfigError naming the key."""
    path = resolve_study_path(name)
    return parse_study(path.read_text(), str(path))


_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def parse_study(text: str, source: str = "<study>") -> Study:
    """The :class:`Study` of a config's ``text`` (``source`` names it in errors).

    The sections are checked in the order they are written below, so the first mistake
    of a file is the one reported.
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(source, "", f"not valid TOML: {err}") from None
    top = ConfigTable(source, raw, "")
    top.allow("study", "samples", "classes", "pretrain", "finetune", "evaluate")
    st = top.table("study")
    st.allow("seeds", "jobs", "threads", "variations", "reference", "set", "heartbeat")
    seeds = _seeds(st)
    variations, reference = _variations(st)
    samples = _samples(top.table("samples"))
    classes = _classes(top.table("classes"))
    pre = top.table("pretrain")
    pre.allow("epochs", "set", "objectives", "sizes")
    sizes = _sizes(pre)
    objectives = _objectives(pre.table("objectives"))
    ft = top.table("finetune")
    ft.allow("config", "fractions", "epochs", "min_steps", "baseline", "set")
    fractions = _fractions(ft)
    baseline = _baseline(ft, objectives)
    ev = top.table("evaluate")
    ev.allow("split", "bootstrap", "compare", "bins")
    split = ev.choice("split", "test", ("test", "val", "train"))
    compare = _compare(ev, [baseline, *objectives])
    return Study(
        source=source, text=text, samples=samples, variations=variations,
        reference=reference, classes=classes, objectives=objectives, seeds=seeds,
        jobs=st.integer("jobs", 1, 1), threads=st.integer("threads", 1, 0),
        common=st.strings("set", ()), heartbeat=st.number("heartbeat", 300.0, above=0.0),
        pretrain_epochs=pre.integer("epochs", 10, 1), pretrain_set=pre.strings("set", ()),
        sizes=sizes,
        finetune_config=ft.string("config", "finetune"), fractions=fractions,
        finetune_epochs=ft.integer("epochs", 10, 1), min_steps=ft.integer("min_steps", 0, 0),
        baseline=baseline, finetune_set=ft.strings("set", ()),
        split=split, bootstrap=ev.integer("bootstrap", 200, 0),
        bins=ev.integer("bins", 0, 0),
        compare=compare,
    )


def _seeds(st: ConfigTable) -> tuple[int, ...]:
    seeds = st.integers("seeds", (0,), 0)
    if not seeds or len(set(seeds)) != len(seeds):
        st.fail("seeds", f"must be distinct seeds, got {list(seeds)}")
    return seeds


def _variations(st: ConfigTable) -> tuple[tuple[str, ...], str]:
    """``study.variations`` and the ``reference`` among them."""
    variations = st.strings("variations", (), required=True)
    reference = st.string("reference", "nominal")
    if reference not in variations:
        st.fail("reference", f"{reference!r} is not in study.variations {list(variations)}")
    if len(set(variations)) != len(variations):
        st.fail("variations", "names a variation twice")
    return variations, reference


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


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _distinct(values: list[Any]) -> bool:
    return len(set(values)) == len(values)


def _sizes(pre: ConfigTable) -> tuple[float, ...]:
    """``pretrain.sizes``: distinct fractions in (0, 1], 1.0 among them; sorted."""
    given = pre.raw.get("sizes", [1.0])
    valid = isinstance(given, list) and bool(given) and \
        all(_is_number(f) and 0 < f <= 1 for f in given) and _distinct(given)
    if not valid or 1.0 not in [float(f) for f in given]:
        pre.fail("sizes", "must be distinct fractions in (0, 1], 1.0 among them (the "
                 f"pre-training fine-tuned), got {given!r}")
    return tuple(sorted(float(f) for f in given))


def _objectives(obj_t: ConfigTable) -> dict[str, str]:
    objectives = {name: obj_t.string(name, None, required=True) for name in obj_t}
    if not objectives:
        obj_t.fail("", "name at least one objective (name = \"training config\")")
    return objectives


def _fractions(ft: ConfigTable) -> tuple[float, ...]:
    """``finetune.fractions``: distinct numbers in (0, 1]; sorted."""
    given = ft.raw.get("fractions", [0.01, 0.1, 1.0])
    numeric = isinstance(given, list) and all(_is_number(f) for f in given)
    fractions = [float(f) for f in given] if numeric else []
    if not fractions or not all(0 < f <= 1 for f in fractions) or not _distinct(fractions):
        ft.fail("fractions", f"must be distinct numbers in (0, 1], got {given!r}")
    return tuple(sorted(fractions))


def _baseline(ft: ConfigTable, objectives: Mapping[str, str]) -> str:
    baseline = ft.string("baseline", "scratch")
    if baseline in objectives:
        ft.fail("baseline", f"{baseline!r} is also an objective's name")
    return baseline


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

"""``resim study``: the RS3L comparison, end to end, from one TOML file.

A study generates top / W / QCD samples with RS3L-style variations (nominal, new seed, FSR
scale up and down, another shower), pre-trains one encoder with each self-supervised
objective, fine-tunes every pre-trained encoder and a from-scratch baseline at several
labelled fractions, evaluates each classifier in distribution and under every variation
(:func:`resim.train.evaluate.evaluate_shift`), and writes a Markdown report with tables
and plots (:mod:`resim.train.study_report`).

The work is a list of *stages*, each a directory under the output::

    data/<sample>-<shard>/         resim generate          (<sample>-<shard>.h5)
    data/<sample>-test-<shard>/    resim generate          a test-only sample (optional)
    pretrain/<objective>-s<seed>/  resim train             (last.pt, metrics.csv)
    probe/<objective>-s<seed>/     resim probe             (probe.json, probe.png)
    finetune/<row>-<pct>-s<seed>/  resim finetune          (row: an objective or the baseline)
    evaluate/<row>-<pct>-s<seed>/  resim evaluate (nominal/), evaluate_shift (shift/)

Each stage directory holds ``stage.json``: the stage's *fingerprint* (a hash of
everything that determines its output: card text, events and seed; the effective training
config; the fingerprints of the stages it reads), whether it is complete, its run time and
its result. A rerun skips complete stages with the same fingerprint, resumes unfinished
ones (generation and training continue from their last commit or checkpoint, exactly),
and refuses to mix outputs made from other settings unless ``--overwrite`` (which remakes
those stages and, since fingerprints chain, everything downstream of them).

Stages run ``jobs`` at a time in separate processes (``spawn``), each with ``threads``
torch threads: on a small shared machine, two one-thread processes beat one two-thread
process (OpenMP threads spin while waiting). A stage starts as soon as the stages it reads
are complete, pre-trainings first. Seeds are fixed: the cards' run seeds for the data, and
``run.seed`` = the study seed for pre-training and fine-tuning, so a study reruns bit for
bit on CPU.

Design choices, and why:

* The variations come from the shipped cards (``top``, ``wqq``, ``qcd``) restricted to
  ``study.variations``: one source of physics settings. The restricted card text is
  written to ``DIR/cards/`` so ``resim generate --card DIR/cards/top-0.toml`` remakes a
  shard alone.
* A sample may be generated as several independent *shards* (card seed + shard index),
  so generation, dominated by the Vincia shower, uses both cores.
* Every objective must pre-train the *same* encoder (checked); the baseline is that
  encoder with random weights, fine-tuned with the same config.
* Fine-tuning reads nominal jets only (the classifier whose shift is measured), and runs
  at least ``finetune.min_steps`` optimiser steps: at 1 % of the labels an epoch is a
  single small batch, and ten of them would not train anything.
* Every pre-trained encoder is also probed frozen (``resim probe``'s code: kNN, linear
  probe, effective rank, shortcut R², against the same network at its initial weights),
  beside the fine-tuned taggers. ``[pretrain] sizes`` adds pre-trainings on nested
  fractions of the pre-training groups (``data.pretrain_fraction``), probed the same way:
  how the representation grows with pre-training data.
* ``test_events`` of a sample: a separate test-only sample (its own hard events from
  another run seed, every study variation), generated in ``test_shards`` shards and
  marked as the test split as a whole (the file attribute ``split = "test"``), so the
  JS distances under shift are measured on many more jets than the training sample's
  test fraction holds.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import sys
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from resim.schema import Shipped, Table

from .config import Config, ConfigError, load_config
from .loop import CHECKPOINT, RunError

STAGE_FILE = "stage.json"
KINDS = ("generate", "pretrain", "probe", "finetune", "evaluate")
#: Run seeds of a test-only sample start this far from the card's (its own hard events).
TEST_SEED_OFFSET = 10_000

Echo = Callable[[str], None]


# --------------------------------------------------------------------------- the config


@dataclass(frozen=True)
class Sample:
    """One physics sample: a card, the hard events to generate, in how many shards."""

    name: str
    card: str  # shipped card name or path
    events: int
    shards: int = 1
    seed: int | None = None  # None: the card's
    test_events: int = 0  # a test-only sample of this many hard events (0: none)
    test_shards: int = 1


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


class _Table(Table):
    """A study table: the shared key checks of :mod:`resim.schema`, raising ConfigErrors
    (the trainer's commands report those as one line, exit code 2)."""

    error = ConfigError


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
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(source, "", f"not valid TOML: {err}") from None
    top = _Table(source, raw, "")
    top.allow("study", "samples", "classes", "pretrain", "finetune", "evaluate")
    st = top.table("study")
    st.allow("seeds", "jobs", "threads", "variations", "reference", "set", "heartbeat")
    seeds = st.integers("seeds", (0,), 0)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(source, "study.seeds", f"must be distinct seeds, got {list(seeds)}")
    variations = st.strings("variations", (), required=True)
    reference = st.string("reference", "nominal")
    if reference not in variations:
        raise ConfigError(source, "study.reference",
                          f"{reference!r} is not in study.variations {list(variations)}")
    if len(set(variations)) != len(variations):
        raise ConfigError(source, "study.variations", "names a variation twice")

    samples_t = top.table("samples")
    samples = []
    for name in samples_t:
        if not _NAME.match(name):
            raise ConfigError(source, samples_t.key(name), "sample names are lower-case "
                              "identifiers")
        s = samples_t.table(name)
        s.allow("card", "events", "shards", "seed", "test_events", "test_shards")
        if "events" not in s.raw:
            s.fail("events", "missing")
        samples.append(Sample(name=name, card=s.string("card", None, required=True),
                              events=s.integer("events", None, 1),
                              shards=s.integer("shards", 1, 1),
                              seed=s.integer("seed", None, 0),
                              test_events=s.integer("test_events", 0, 0),
                              test_shards=s.integer("test_shards", 1, 1)))
    if not samples:
        raise ConfigError(source, "samples", "define at least one [samples.NAME]")
    for s in samples:
        if s.shards > s.events:
            raise ConfigError(source, f"samples.{s.name}.shards",
                              f"more shards ({s.shards}) than events ({s.events})")
        if s.test_events and s.test_shards > s.test_events:
            raise ConfigError(source, f"samples.{s.name}.test_shards",
                              f"more shards ({s.test_shards}) than events ({s.test_events})")

    cl = top.table("classes")
    classes = {name: cl.strings(name, (), required=True) for name in cl}
    if len(classes) < 2:
        raise ConfigError(source, "classes", "give at least two classes (name = [labels])")

    pre = top.table("pretrain")
    pre.allow("epochs", "set", "objectives", "sizes")
    given_sizes = pre.raw.get("sizes", [1.0])
    if not isinstance(given_sizes, list) or not given_sizes or not all(
            isinstance(f, int | float) and not isinstance(f, bool) and 0 < f <= 1
            for f in given_sizes) or len(set(given_sizes)) != len(given_sizes) or \
            1.0 not in [float(f) for f in given_sizes]:
        raise ConfigError(source, "pretrain.sizes", "must be distinct fractions in (0, 1], "
                          f"1.0 among them (the pre-training fine-tuned), got {given_sizes!r}")
    obj_t = pre.table("objectives")
    objectives = {name: obj_t.string(name, None, required=True) for name in obj_t}
    if not objectives:
        raise ConfigError(source, "pretrain.objectives",
                          "name at least one objective (name = \"training config\")")

    ft = top.table("finetune")
    ft.allow("config", "fractions", "epochs", "min_steps", "baseline", "set")
    given = ft.raw.get("fractions", [0.01, 0.1, 1.0])
    numeric = isinstance(given, list) and all(
        isinstance(f, int | float) and not isinstance(f, bool) for f in given)
    fractions = tuple(float(f) for f in given) if numeric else ()
    if not fractions or not all(0 < f <= 1 for f in fractions) or \
            len(set(fractions)) != len(fractions):
        raise ConfigError(source, "finetune.fractions",
                          f"must be distinct numbers in (0, 1], got {given!r}")
    baseline = ft.string("baseline", "scratch")
    if baseline in objectives:
        raise ConfigError(source, "finetune.baseline",
                          f"{baseline!r} is also an objective's name")

    ev = top.table("evaluate")
    ev.allow("split", "bootstrap", "compare", "bins")
    split = ev.choice("split", "test", ("test", "val", "train"))
    compare = ev.raw.get("compare", [])
    rows = [baseline, *objectives]
    if not isinstance(compare, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(r in rows for r in p) and p[0] != p[1]
            for p in compare):
        raise ConfigError(source, "evaluate.compare", "must be a list of pairs of rows "
                          f"[\"a\", \"b\"] (rows: {', '.join(r for r in rows if r)}), got "
                          f"{compare!r}")
    return Study(
        source=source, text=text, samples=tuple(samples), variations=variations,
        reference=reference, classes=classes, objectives=objectives, seeds=seeds,
        jobs=st.integer("jobs", 1, 1), threads=st.integer("threads", 1, 0),
        common=st.strings("set", ()), heartbeat=st.number("heartbeat", 300.0, above=0.0),
        pretrain_epochs=pre.integer("epochs", 10, 1), pretrain_set=pre.strings("set", ()),
        sizes=tuple(sorted(float(f) for f in given_sizes)),
        finetune_config=ft.string("config", "finetune"), fractions=tuple(sorted(fractions)),
        finetune_epochs=ft.integer("epochs", 10, 1), min_steps=ft.integer("min_steps", 0, 0),
        baseline=baseline, finetune_set=ft.strings("set", ()),
        split=split, bootstrap=ev.integer("bootstrap", 200, 0),
        bins=ev.integer("bins", 0, 0),
        compare=tuple((a, b) for a, b in compare),
    )


# --------------------------------------------------------------------------- cards


def restrict_variations(text: str, keep: Sequence[str]) -> str:
    """The card ``text`` without the ``[variations.X]`` tables whose X is not in ``keep``.

    Works on the text (a card's comments stay), so it only handles variations written as
    tables; :func:`study_card` checks the result against the parsed card.
    """
    out, skipping = [], False
    for line in text.splitlines(keepends=True):
        header = re.match(r"^\[\s*([A-Za-z0-9_.\"-]+)\s*\]", line)
        if header:
            parts = header.group(1).split(".")
            skipping = parts[0] == "variations" and len(parts) > 1 and parts[1] not in keep
        if not skipping:
            out.append(line)
    return "".join(out)


def study_card(study: Study, sample: Sample, shard: int, output: Path,
               test: bool = False) -> tuple[Any, str]:
    """The card of one shard of ``sample`` (only the study's variations; events, seed and
    output set), and its text; ``test``: a shard of its test-only sample (run seeds from
    the card's + :data:`TEST_SEED_OFFSET`)."""
    from resim.card import CardError, parse_card, resolve_card_path

    key = f"samples.{sample.name}.card"
    where = Path(study.source).parent
    try:
        path = resolve_card_path(where / sample.card if (where / sample.card).is_file()
                                 else sample.card)
        original = path.read_text()
        full = tomllib.loads(original)
        text = restrict_variations(original, study.variations)
        raw = tomllib.loads(text)
    except (CardError, OSError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(study.source, key, str(err)) from None
    have = list(full.get("variations", {}))
    missing = [v for v in study.variations if v not in have]
    if missing:
        raise ConfigError(study.source, "study.variations",
                          f"card {path} has no variation {', '.join(missing)} "
                          f"(it has {', '.join(have)})")
    same = {k: v for k, v in full.items() if k != "variations"} == \
        {k: v for k, v in raw.items() if k != "variations"}
    if not same or sorted(raw.get("variations", {})) != sorted(study.variations):
        raise ConfigError(study.source, key, f"cannot restrict the variations of {path} "
                          "by its text; write a card with only the study's variations")
    what = "test-only shard" if test else "shard"
    text = (f"# {sample.name} {what} {shard} of resim study {study.source}: card "
            f"{sample.card}, variations {', '.join(study.variations)}\n") + text
    try:
        card = parse_card(raw, path, text)
        seed = (card.run.seed if sample.seed is None else sample.seed) + shard + \
            (TEST_SEED_OFFSET if test else 0)
        events = shard_events(sample.test_events, sample.test_shards)[shard] if test else \
            shard_events(sample.events, sample.shards)[shard]
        card = card.with_overrides(events=events, seed=seed, output=output)
    except CardError as err:
        raise ConfigError(study.source, key, str(err)) from None
    return card, text


def shard_events(events: int, shards: int) -> list[int]:
    """Hard events per shard: as equal as possible, the first shards take the remainder."""
    return [events // shards + (k < events % shards) for k in range(shards)]


# --------------------------------------------------------------------------- stages


@dataclass
class Stage:
    """One unit of work: a kind, its directory, what it needs, and its parameters."""

    name: str  # e.g. "pretrain/rs3l-s0": also its directory under the output
    kind: str
    fingerprint: str
    params: dict[str, Any]
    needs: tuple[str, ...] = ()
    record: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def complete(self) -> bool:
        return bool(self.record and self.record.get("complete")
                    and self.record.get("fingerprint") == self.fingerprint)


def fingerprint(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def pct(fraction: float) -> str:
    """A fraction as a directory-name part: 0.01 -> '1pct', 0.125 -> '12.5pct'."""
    return f"{100 * fraction:g}pct"


def _config(study: Study, name: str, overrides: Sequence[str], key: str) -> Config:
    """A training config with the study's overrides; errors name the study key too."""
    try:
        return load_config(name, list(overrides))
    except ConfigError as err:
        raise ConfigError(study.source, key, str(err)) from None


def _toml(value: Any) -> str:
    """A TOML value for a ``--set`` override (encoder settings: numbers, strings, lists)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, Sequence):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def plan(study: Study, output: Path) -> list[Stage]:
    """Every stage of the study, in the order they are started; checks every config."""
    from resim.generate import fingerprint as card_fingerprint

    from .finetune import classes_override

    output = Path(output)
    stages: list[Stage] = []
    data_files, data_prints = [], []
    labels: list[str] = []
    for sample in study.samples:
        shards = [(f"{sample.name}-{k}", k, False) for k in range(sample.shards)]
        if sample.test_events:
            shards += [(f"{sample.name}-test-{k}", k, True) for k in range(sample.test_shards)]
        for tag, k, test in shards:
            name = f"data/{tag}"
            h5 = output / name / f"{tag}.h5"
            card, text = study_card(study, sample, k, h5, test=test)
            labels += [label for label in card.labels if label not in labels]
            fp = fingerprint("generate", card_fingerprint(card), "test" if test else "")
            stages.append(Stage(name, "generate", fp, {
                "card": card, "card_text": text, "card_copy": str(output / "cards" /
                                                                   f"{tag}.toml"),
                "events": card.run.events, "sample": sample.name,
                "split": "test" if test else None}))
            data_files.append(str(h5))
            data_prints.append(fp)
    for cname, members in study.classes.items():
        for label in members:
            if label not in labels:
                raise ConfigError(study.source, f"classes.{cname}",
                                  f"label {label!r} is in no sample (labels: "
                                  f"{', '.join(labels)})")
    # longest first: shards of the biggest samples start first
    stages.sort(key=lambda s: -s.params["events"])
    data_names = tuple(s.name for s in stages)

    common = [*study.common, f"run.threads={study.threads}"]
    encoder = None
    first = frame = None
    pretrain_stage: dict[tuple[str, int], Stage] = {}
    probes: list[Stage] = []
    for obj, cfg_name in study.objectives.items():
        key = f"pretrain.objectives.{obj}"
        overrides = [*common, *study.pretrain_set, f"run.epochs={study.pretrain_epochs}"]
        config = _config(study, cfg_name, overrides, key)
        if config.encoder is None or config.method is None:
            raise ConfigError(study.source, key, f"{config.source} has no [encoder] and "
                              "[method]: not a pre-training config")
        if encoder is None:
            encoder, first, frame = config.encoder, obj, config.data.frame
        elif config.encoder != encoder:
            raise ConfigError(study.source, key, f"its encoder {_encoder_text(config)} differs "
                              f"from {first}'s {_encoder_text_of(encoder)}: a study compares "
                              "objectives on the same encoder")
        elif config.data.frame != frame:
            raise ConfigError(study.source, key, f"its data.frame {config.data.frame!r} "
                              f"differs from {first}'s {frame!r}: a study compares objectives "
                              "on the same encoder inputs")
        for size in sorted(study.sizes, reverse=True):
            for seed in study.seeds:
                extra = [f"run.seed={seed}"] + \
                    ([f"data.pretrain_fraction={size}"] if size < 1 else [])
                cfg = config.with_overrides(extra)
                tag = f"{obj}-s{seed}" if size == 1 else f"{obj}-{pct(size)}-s{seed}"
                s = Stage(f"pretrain/{tag}", "pretrain",
                          fingerprint("pretrain", cfg.to_dict(), data_prints),
                          {"config": cfg_name, "overrides": [*overrides, *extra],
                           "data": data_files, "objective": obj, "seed": seed, "size": size},
                          needs=data_names)
                probe = Stage(f"probe/{tag}", "probe", fingerprint("probe", s.fingerprint,
                                                                   dict(study.classes)),
                              {"checkpoint": str(output / s.name / CHECKPOINT),
                               "data": data_files, "classes": dict(study.classes),
                               "objective": obj, "seed": seed, "size": size},
                              needs=(s.name,))
                if size == 1:
                    pretrain_stage[obj, seed] = s
                stages.append(s)
                probes.append(probe)
    assert encoder is not None

    ft_common = [*common, *study.finetune_set, "data.variations=[]",
                 classes_override(study.classes), f"run.epochs={study.finetune_epochs}"]
    base = _config(study, study.finetune_config, ft_common, "finetune.set")
    if base.encoder is not None:
        raise ConfigError(study.source, "finetune.config", f"{base.source} has an [encoder]: "
                          "the study fine-tunes the objectives' encoder; give a config "
                          "without one (e.g. finetune)")
    scratch_override = "encoder=" + _toml({"name": encoder.name, **encoder.settings})
    tuned, evaluated = [], []
    for row in study.rows:
        for fraction in study.fractions:
            for seed in study.seeds:
                overrides = [*ft_common, f"finetune.fraction={fraction}", f"run.seed={seed}"]
                upstream = None
                if row == study.baseline:  # the same encoder and inputs, random weights
                    overrides += [scratch_override, f"data.frame={frame}"]
                else:
                    upstream = pretrain_stage[row, seed]
                cfg = _config(study, study.finetune_config, overrides, "finetune.set")
                tag = f"{row}-{pct(fraction)}-s{seed}"
                ft = Stage(f"finetune/{tag}", "finetune",
                           fingerprint("finetune", cfg.to_dict(), data_prints,
                                       study.min_steps,
                                       upstream.fingerprint if upstream else None),
                           {"config": study.finetune_config, "overrides": overrides,
                            "data": data_files, "min_steps": study.min_steps,
                            "checkpoint": str(output / upstream.name / CHECKPOINT)
                            if upstream else None,
                            "row": row, "fraction": fraction, "seed": seed},
                           needs=data_names + ((upstream.name,) if upstream else ()))
                ev = Stage(f"evaluate/{tag}", "evaluate",
                           fingerprint("evaluate", ft.fingerprint, study.split,
                                       study.reference, study.bins or None),
                           {"checkpoint": str(output / ft.name / CHECKPOINT),
                            "data": data_files, "split": study.split,
                            "reference": study.reference, "bins": study.bins or None,
                            "row": row, "fraction": fraction, "seed": seed},
                           needs=(ft.name,))
                tuned.append(ft)
                evaluated.append(ev)
    # the longest fine-tunings (largest fraction) first; the baseline's need no pre-training
    tuned.sort(key=lambda s: -s.params["fraction"])
    stages += tuned + probes + evaluated
    for s in stages:
        s.record = read_record(output / s.name)
    return stages


def _encoder_text(config: Config) -> str:
    return _encoder_text_of(config.encoder)


def _encoder_text_of(encoder: Any) -> str:
    return _toml({"name": encoder.name, **encoder.settings})


def read_record(directory: Path) -> dict[str, Any] | None:
    try:
        return json.loads((directory / STAGE_FILE).read_text())
    except (OSError, ValueError):
        return None


def write_record(directory: Path, record: dict[str, Any]) -> None:
    """``stage.json``, atomically (a killed study never leaves half a record)."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{STAGE_FILE}.tmp{os.getpid()}"
    tmp.write_text(json.dumps(record, indent=1, default=str) + "\n")
    os.replace(tmp, directory / STAGE_FILE)


# --------------------------------------------------------------------------- stage work
# These run in worker processes: plain arguments in, JSON-ready dicts out.


def _run_generate(directory: Path, card: Any, card_text: str, card_copy: str,
                  split: str | None = None, **_: Any) -> dict[str, Any]:
    import h5py

    from resim.generate import generate
    from resim.store import parts_dir

    Path(card_copy).parent.mkdir(parents=True, exist_ok=True)
    Path(card_copy).write_text(card_text)
    output = card.run.output
    resume = output.exists() or parts_dir(output).exists()
    if split and output.is_file():  # a marked file is complete (and resume would refuse it)
        with h5py.File(output, "r") as f:
            resume = f.attrs.get("split") != split
    s = generate(card, resume=resume, progress=False) if resume or not output.exists() \
        else None
    if split:  # all of this file is one split (as resim convert --split marks files)
        with h5py.File(output, "r+") as f:
            f.attrs["split"] = split
    if s is None:
        from resim.dataset import JetDataset

        summary = JetDataset(output).summary
        return {"file": str(output), "events": summary.get("events"), "split": split}
    return {"file": str(output), "events": s.events, "groups": s.groups, "jets": s.jets,
            "variations": s.variations, "labels": s.labels, "failed": s.failed,
            "lost": s.lost, "generate_seconds": round(s.seconds, 1), "split": split}


def _fit_summary(result: Any) -> dict[str, Any]:
    return {"epochs": result.position.epoch, "steps": result.position.step,
            "train_loss": result.train_loss, "val_loss": result.val_loss,
            "jets_per_s": result.jets_per_s}


def _run_pretrain(directory: Path, config: str, overrides: list[str], data: list[str],
                  **_: Any) -> dict[str, Any]:
    from .pretrain import pretrain

    cfg = load_config(config, overrides)
    resume = (directory / CHECKPOINT).is_file()
    result = pretrain(None if resume else cfg, data, directory, resume=resume,
                      overwrite=not resume, progress=False)
    return _fit_summary(result)


def _run_finetune(directory: Path, config: str, overrides: list[str], data: list[str],
                  checkpoint: str | None, min_steps: int, fraction: float,
                  **_: Any) -> dict[str, Any]:
    from .finetune import class_mapping, finetune, labelled_jets
    from .pretrain import open_data

    cfg = load_config(config, overrides)
    resume = (directory / CHECKPOINT).is_file()
    if not resume:
        # Enough epochs for min_steps optimiser steps at this labelled fraction.
        jets = open_data(data, class_mapping(cfg, open_data(data).labels))
        steps = len(labelled_jets(cfg, jets, "train", None, fraction=fraction, shuffle=True))
        epochs = max(cfg.run.epochs, math.ceil(min_steps / max(steps, 1)))
        cfg = cfg.with_overrides([f"run.epochs={epochs}"])
    result = finetune(None if resume else cfg, data, directory, checkpoint if not resume
                      else None, resume=resume, overwrite=not resume, progress=False)
    state_data = _checkpoint_data(directory / CHECKPOINT)
    return {**_fit_summary(result), "n_train_jets": state_data.get("n_train_jets")}


def _checkpoint_data(path: Path) -> dict[str, Any]:
    from .loop import load_checkpoint

    return load_checkpoint(path).get("data", {})


def _run_probe(directory: Path, checkpoint: str, data: list[str],
               classes: dict[str, list[str]], **_: Any) -> dict[str, Any]:
    from .probe import probe

    result = probe(checkpoint, data, directory, classes=classes, overwrite=True)
    return {name: {"linear_auc": result[name]["linear_auc"],
                   "knn_20": (result[name]["knn_accuracy"] or {}).get("20"),
                   "effective_rank": result[name]["effective_rank"],
                   "r2_abs_eta": result[name]["r2"]["abs_eta"]}
            for name in ("encoder", "baseline")}


def _run_evaluate(directory: Path, checkpoint: str, data: list[str], split: str,
                  reference: str, bins: int | None = None, **_: Any) -> dict[str, Any]:
    from . import evaluate as ev

    metrics = ev.evaluate(checkpoint, data, directory / "nominal", split=split,
                          overwrite=True)
    shutil.rmtree(directory / "shift", ignore_errors=True)  # a killed earlier attempt's
    shift = ev.evaluate_shift(checkpoint, data, directory / "shift", reference=reference,
                              split=split, bins=bins)
    return {"n_jets": metrics["n_jets"], "accuracy": metrics["accuracy"],
            "auc": metrics["auc"],
            "js_mean": {v: r.get("js_distance_mean") for v, r in shift["variations"].items()
                        if v != reference}}


_RUNNERS: dict[str, Callable[..., dict[str, Any]]] = {
    "generate": _run_generate, "pretrain": _run_pretrain, "probe": _run_probe,
    "finetune": _run_finetune, "evaluate": _run_evaluate,
}


def run_stage(kind: str, directory: str, params: dict[str, Any],
              threads: int) -> dict[str, Any]:
    """Do one stage (in whatever process calls it); returns its result and run time."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    start = time.perf_counter()
    result = _RUNNERS[kind](Path(directory), **params)
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


def _worker_init(threads: int) -> None:
    """Set up a worker process: thread counts, and an exit when the study process dies
    (a killed study must not leave orphans writing into stages its rerun redoes)."""
    import threading

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads or 1)
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(2.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


# --------------------------------------------------------------------------- running


def _clock(start: float) -> str:
    s = int(time.monotonic() - start)
    return f"{s // 3600:d}:{s // 60 % 60:02d}:{s % 60:02d}"


def _describe(result: dict[str, Any]) -> str:
    parts = []
    if "jets" in result:
        parts.append(f"{result['groups']} groups, {result['jets']} jets")
    if result.get("train_loss") is not None:
        parts.append(f"{result['epochs']} epochs, {result['steps']} steps, "
                     f"train loss {result['train_loss']:.4g}")
    if result.get("n_train_jets") is not None:
        parts.append(f"{result['n_train_jets']} labelled jets")
    if "accuracy" in result:
        parts.append(f"{result['n_jets']} jets: accuracy {result['accuracy']:.3f}, "
                     f"AUC {result['auc']:.4f}")
    if "encoder" in result and result["encoder"].get("linear_auc") is not None:
        e, b = result["encoder"], result["baseline"]
        parts.append(f"linear probe AUC {e['linear_auc']:.3f} (random {b['linear_auc']:.3f}), "
                     f"effective rank {e['effective_rank']:.1f}, R² |eta| "
                     f"{e['r2_abs_eta']:.2f}")
    return "; ".join(parts)


def check_outputs(stages: Sequence[Stage], output: Path, overwrite: bool) -> list[Stage]:
    """Stages left from other settings: an error, or (``overwrite``) removed."""
    stale = [s for s in stages if s.record is not None
             and s.record.get("fingerprint") != s.fingerprint]
    if stale and not overwrite:
        names = ", ".join(s.name for s in stale[:6]) + (" ..." if len(stale) > 6 else "")
        raise RunError(f"{output}: {len(stale)} stages were made with other settings "
                       f"({names}); pass --overwrite to remake them, or use another --output")
    for s in stale:
        shutil.rmtree(output / s.name)
        s.record = None
    return stale


def execute(stages: Sequence[Stage], output: Path, jobs: int, threads: int, echo: Echo,
            heartbeat: float = 300.0) -> None:
    """Run every incomplete stage, ``jobs`` at a time, each as soon as what it needs is
    complete. A failing stage stops new starts; running ones finish (their work is kept)."""
    start = time.monotonic()
    by_name = {s.name: s for s in stages}
    todo = [s for s in stages if not s.complete]
    total, done_before = len(stages), len(stages) - len(todo)
    if done_before:
        echo(f"study: {done_before} of {total} stages complete (reused)")
    counter = [done_before]

    def begin(s: Stage) -> dict[str, Any]:
        record = {"stage": s.name, "kind": s.kind, "fingerprint": s.fingerprint,
                  "complete": False, "started": _now(), "load_start": os.getloadavg()[0],
                  "params": s.params}
        write_record(output / s.name, record)
        echo(f"study {_clock(start)} start {s.name}")
        return record

    def finish(s: Stage, record: dict[str, Any], result: dict[str, Any]) -> None:
        counter[0] += 1
        record.update(complete=True, finished=_now(), seconds=result.pop("seconds"),
                      load_end=os.getloadavg()[0], result=result)
        write_record(output / s.name, record)
        s.record = record
        echo(f"study {_clock(start)} [{counter[0]}/{total}] done {s.name} in "
             f"{record['seconds']:.0f} s: {_describe(result)}")

    def ready(s: Stage) -> bool:
        return all(by_name[n].complete for n in s.needs)

    if jobs <= 1:
        for s in todo:
            record = begin(s)
            finish(s, record, _call(s, output, threads))
        return

    running: dict[Future, tuple[Stage, dict[str, Any], float]] = {}
    failure: tuple[Stage, BaseException] | None = None
    context = get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_worker_init,
                             initargs=(threads,)) as pool:
        while todo or running:
            if failure is None:
                for s in [s for s in todo if ready(s)][:jobs - len(running)]:
                    todo.remove(s)
                    record = begin(s)
                    future = pool.submit(run_stage, s.kind, str(output / s.name), s.params,
                                         threads)
                    running[future] = (s, record, time.monotonic())
            if not running:
                if failure is None and todo:
                    raise RunError(f"study: stages {[s.name for s in todo]} wait for stages "
                                   "that cannot run")
                break
            finished, _ = wait(running, timeout=heartbeat, return_when=FIRST_COMPLETED)
            if not finished:
                busy = ", ".join(f"{s.name} ({(time.monotonic() - t) / 60:.0f} min)"
                                 for s, _, t in running.values())
                echo(f"study {_clock(start)} running: {busy}; {len(todo)} stages waiting")
            for future in finished:
                s, record, _ = running.pop(future)
                try:
                    finish(s, record, future.result())
                except Exception as err:  # any stage failure is reported, naming the stage
                    failure = failure or (s, err)
                    echo(f"study {_clock(start)} FAILED {s.name}: {err}")
    if failure is not None:
        s, err = failure
        raise RunError(f"stage {s.name} failed: {err} (its directory: {output / s.name}; "
                       "fix the cause and rerun: complete stages are kept)")


def _call(s: Stage, output: Path, threads: int) -> dict[str, Any]:
    try:
        return run_stage(s.kind, str(output / s.name), s.params, threads)
    except (ConfigError, RunError) as err:
        raise RunError(f"stage {s.name} failed: {err} (fix the cause and rerun: complete "
                       "stages are kept)") from None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def run_study(study: Study, output: str | Path, *, jobs: int | None = None,
              overwrite: bool = False, report: str | Path | None = None,
              command: str | None = None, echo: Echo | None = None) -> Path:
    """Run (or finish) the study into ``output``; write the report; return its path.

    ``report``: where the Markdown goes (default ``output/report.md``); its figures go in
    a folder of the same stem beside it (``report/``). ``command`` is quoted in the report.
    """
    from .study_report import write_report

    echo = echo or (lambda line: print(line, file=sys.stderr, flush=True))
    began = time.time()
    output = Path(output)
    jobs = study.jobs if jobs is None else jobs
    if jobs < 1:
        raise ConfigError("--jobs", "", f"must be >= 1, got {jobs}")
    stages = plan(study, output)  # every config checked before anything runs
    check_outputs(stages, output, overwrite)
    output.mkdir(parents=True, exist_ok=True)
    (output / "study.toml").write_text(study.text)
    echo(f"study: {len(stages)} stages ({_counts(stages)}) into {output}, {jobs} at a time")
    to_run = sum(not s.complete for s in stages)
    execute(stages, output, jobs, study.threads, echo, study.heartbeat)
    timing = _update_timing(output, {
        "wall_seconds": round(time.time() - began, 1), "stages_run": to_run, "jobs": jobs,
        "complete": all(s.complete for s in stages)})
    path = write_report(study, stages, output, Path(report) if report else
                        output / "report.md", command=command, timing=timing)
    echo(f"study: report {path}")
    return path


def _counts(stages: Sequence[Stage]) -> str:
    return ", ".join(f"{sum(s.kind == k for s in stages)} {k}" for k in KINDS)


def _update_timing(output: Path, run: dict[str, Any]) -> dict[str, Any]:
    """Every invocation of the study on this output, with ``run`` added (``runs.json``)."""
    path = output / "runs.json"
    try:
        runs = json.loads(path.read_text())
    except (OSError, ValueError):
        runs = []
    runs.append({"finished": _now(), **run, "load": [round(x, 2) for x in os.getloadavg()],
                 "cpus": os.cpu_count()})
    path.write_text(json.dumps(runs, indent=1) + "\n")
    return {"runs": runs}


__all__ = ["Stage", "Study", "load_study", "parse_study", "plan", "run_study"]

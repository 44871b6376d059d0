"""The plan of a study: every stage, in the order they start, each with its fingerprint.

:func:`plan` checks every config before anything runs (a study that would fail at its
last stage fails at once), and reads the stages' records from the output, so that
:mod:`resim.study.execute` knows what is complete. Its stages, in order::

    data/<sample>-<shard>/         generate: the samples' shards, the biggest first
    data/<sample>-test-<shard>/    generate: a test-only sample (optional)
    pretrain/<objective>-s<seed>/  pretrain: every objective, size and seed
    finetune/<row>-<pct>-s<seed>/  finetune: every row (objective or baseline), labelled
                                   fraction and seed, the largest fractions first
    probe/<objective>-s<seed>/     probe: every pre-training, frozen
    evaluate/<row>-<pct>-s<seed>/  evaluate: every fine-tuning, nominal and under shift
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resim.output import fingerprint as card_fingerprint
from resim.train.config import Config, ConfigError, EncoderConfig, load_config
from resim.train.finetune import classes_override
from resim.train.loop import CHECKPOINT

from .cards import study_card
from .spec import Sample, Study
from .stages import Stage, pct, read_record, stage_fingerprint


@dataclass(frozen=True)
class DataStages:
    """The generate stages (longest first) and the data files they make (in sample
    order, as every training stage reads them), with the stages' fingerprints."""

    stages: list[Stage]
    files: list[str]
    prints: list[str]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.stages)


@dataclass(frozen=True)
class Pretrained:
    """What fine-tuning needs of the pre-trainings: the stage of each (objective, seed)
    on all pre-training data, and the encoder and input frame they share."""

    stages: Mapping[tuple[str, int], Stage]
    encoder: EncoderConfig
    frame: str


def plan(study: Study, output: Path) -> list[Stage]:
    """Every stage of the study, in the order they are started; checks every config."""
    output = Path(output)
    data = data_stages(study, output)
    common = [*study.common, f"run.threads={study.threads}"]
    pretrainings, probes, pretrained = pretrain_stages(study, output, data, common)
    tuned, evaluated = finetune_stages(study, output, data, common, pretrained)
    stages = [*data.stages, *pretrainings, *tuned, *probes, *evaluated]
    for s in stages:
        s.record = read_record(output / s.name)
    return stages


# --------------------------------------------------------------------------- generate


def data_stages(study: Study, output: Path) -> DataStages:
    """A generate stage per shard of every sample (and of its test-only sample); checks
    that every class's labels are made by some sample."""
    stages: list[Stage] = []
    files: list[str] = []
    labels: list[str] = []
    for sample in study.samples:
        for tag, k, test in _shards(sample):
            h5 = output / "data" / tag / f"{tag}.h5"
            stage = _generate_stage(study, sample, output, tag, k, test, h5)
            labels += [label for label in stage.params["card"].labels if label not in labels]
            stages.append(stage)
            files.append(str(h5))
    _check_classes(study, labels)
    prints = [s.fingerprint for s in stages]
    # longest first: shards of the biggest samples start first
    stages.sort(key=lambda s: -s.params["events"])
    return DataStages(stages, files, prints)


def _shards(sample: Sample) -> list[tuple[str, int, bool]]:
    """(tag, shard index, test-only) of every shard of ``sample``."""
    shards = [(f"{sample.name}-{k}", k, False) for k in range(sample.shards)]
    if sample.test_events:
        shards += [(f"{sample.name}-test-{k}", k, True) for k in range(sample.test_shards)]
    return shards


def _generate_stage(study: Study, sample: Sample, output: Path, tag: str, k: int,
                    test: bool, h5: Path) -> Stage:
    card, text = study_card(study, sample, k, h5, test=test)
    fp = stage_fingerprint("generate", card_fingerprint(card), "test" if test else "")
    return Stage(f"data/{tag}", "generate", fp, {
        "card": card, "card_text": text, "card_copy": str(output / "cards" / f"{tag}.toml"),
        "events": card.run.events, "sample": sample.name,
        "split": "test" if test else None})


def _check_classes(study: Study, labels: Sequence[str]) -> None:
    for cname, members in study.classes.items():
        for label in members:
            if label not in labels:
                raise ConfigError(study.source, f"classes.{cname}",
                                  f"label {label!r} is in no sample (labels: "
                                  f"{', '.join(labels)})")


# --------------------------------------------------------------------------- pretrain


def pretrain_stages(study: Study, output: Path, data: DataStages, common: Sequence[str]
                    ) -> tuple[list[Stage], list[Stage], Pretrained]:
    """The pre-training and probe stages of every objective, size and seed; checks that
    the objectives share one encoder and input frame."""
    pretrainings: list[Stage] = []
    probes: list[Stage] = []
    full: dict[tuple[str, int], Stage] = {}
    first: tuple[str, Config] | None = None
    overrides = [*common, *study.pretrain_set, f"run.epochs={study.pretrain_epochs}"]
    for obj, cfg_name in study.objectives.items():
        config = _pretrain_config(study, obj, cfg_name, overrides)
        first = first or (obj, config)
        _check_same_encoder(study, obj, config, *first)
        for size in sorted(study.sizes, reverse=True):
            for seed in study.seeds:
                s = _pretrain_stage(study, output, data, obj, cfg_name, overrides, config,
                                    size, seed)
                if size == 1:
                    full[obj, seed] = s
                pretrainings.append(s)
                probes.append(_probe_stage(study, output, data, s))
    assert first is not None  # parse_study requires an objective
    _, config = first
    assert config.encoder is not None
    return pretrainings, probes, Pretrained(full, config.encoder, config.data.frame)


def _pretrain_config(study: Study, obj: str, cfg_name: str, overrides: Sequence[str]
                     ) -> Config:
    key = f"pretrain.objectives.{obj}"
    config = _config(study, cfg_name, overrides, key)
    if config.encoder is None or config.method is None:
        raise ConfigError(study.source, key, f"{config.source} has no [encoder] and "
                          "[method]: not a pre-training config")
    return config


def _check_same_encoder(study: Study, obj: str, config: Config, first: str,
                        first_config: Config) -> None:
    """Every objective pre-trains the same encoder on the same inputs as the first."""
    key = f"pretrain.objectives.{obj}"
    assert config.encoder is not None and first_config.encoder is not None  # checked
    if config.encoder != first_config.encoder:
        raise ConfigError(study.source, key, f"its encoder {_encoder_text(config.encoder)} "
                          f"differs from {first}'s {_encoder_text(first_config.encoder)}: a "
                          "study compares objectives on the same encoder")
    if config.data.frame != first_config.data.frame:
        raise ConfigError(study.source, key, f"its data.frame {config.data.frame!r} "
                          f"differs from {first}'s {first_config.data.frame!r}: a study "
                          "compares objectives on the same encoder inputs")


def _pretrain_stage(study: Study, output: Path, data: DataStages, obj: str, cfg_name: str,
                    overrides: Sequence[str], config: Config, size: float, seed: int
                    ) -> Stage:
    extra = [f"run.seed={seed}"] + ([f"data.pretrain_fraction={size}"] if size < 1 else [])
    cfg = config.with_overrides(extra)
    tag = f"{obj}-s{seed}" if size == 1 else f"{obj}-{pct(size)}-s{seed}"
    return Stage(f"pretrain/{tag}", "pretrain",
                 stage_fingerprint("pretrain", cfg.to_dict(), data.prints),
                 {"config": cfg_name, "overrides": [*overrides, *extra], "data": data.files,
                  "objective": obj, "seed": seed, "size": size},
                 needs=data.names)


def _probe_stage(study: Study, output: Path, data: DataStages, pretraining: Stage) -> Stage:
    p = pretraining.params
    tag = pretraining.name.removeprefix("pretrain/")
    return Stage(f"probe/{tag}", "probe",
                 stage_fingerprint("probe", pretraining.fingerprint, dict(study.classes)),
                 {"checkpoint": str(output / pretraining.name / CHECKPOINT),
                  "data": data.files, "classes": dict(study.classes),
                  "objective": p["objective"], "seed": p["seed"], "size": p["size"]},
                 needs=(pretraining.name,))


# --------------------------------------------------------------------------- finetune


def finetune_stages(study: Study, output: Path, data: DataStages, common: Sequence[str],
                    pretrained: Pretrained) -> tuple[list[Stage], list[Stage]]:
    """The fine-tuning stages of every row, fraction and seed (the largest fractions
    first) and the evaluation of each."""
    ft_common = [*common, *study.finetune_set, "data.variations=[]",
                 classes_override(study.classes), f"run.epochs={study.finetune_epochs}"]
    _check_finetune_config(study, ft_common)
    # the baseline: the same encoder and inputs, random weights
    scratch = [f"encoder={_encoder_text(pretrained.encoder)}",
               f"data.frame={pretrained.frame}"]
    tuned, evaluated = [], []
    for row in study.rows:
        for fraction in study.fractions:
            for seed in study.seeds:
                upstream = None if row == study.baseline else pretrained.stages[row, seed]
                overrides = [*ft_common, f"finetune.fraction={fraction}", f"run.seed={seed}",
                             *(scratch if upstream is None else [])]
                ft = _finetune_stage(study, output, data, overrides, upstream,
                                     row, fraction, seed)
                tuned.append(ft)
                evaluated.append(_evaluate_stage(study, output, data, ft))
    # the longest fine-tunings (largest fraction) first; the baseline's need no pre-training
    tuned.sort(key=lambda s: -s.params["fraction"])
    return tuned, evaluated


def _check_finetune_config(study: Study, overrides: Sequence[str]) -> None:
    base = _config(study, study.finetune_config, overrides, "finetune.set")
    if base.encoder is not None:
        raise ConfigError(study.source, "finetune.config", f"{base.source} has an [encoder]: "
                          "the study fine-tunes the objectives' encoder; give a config "
                          "without one (e.g. finetune)")


def _finetune_stage(study: Study, output: Path, data: DataStages, overrides: list[str],
                    upstream: Stage | None, row: str, fraction: float, seed: int) -> Stage:
    cfg = _config(study, study.finetune_config, overrides, "finetune.set")
    return Stage(f"finetune/{row}-{pct(fraction)}-s{seed}", "finetune",
                 stage_fingerprint("finetune", cfg.to_dict(), data.prints, study.min_steps,
                                   upstream.fingerprint if upstream else None),
                 {"config": study.finetune_config, "overrides": overrides,
                  "data": data.files, "min_steps": study.min_steps,
                  "checkpoint": str(output / upstream.name / CHECKPOINT) if upstream else None,
                  "row": row, "fraction": fraction, "seed": seed},
                 needs=data.names + ((upstream.name,) if upstream else ()))


def _evaluate_stage(study: Study, output: Path, data: DataStages, finetuning: Stage) -> Stage:
    p = finetuning.params
    tag = finetuning.name.removeprefix("finetune/")
    return Stage(f"evaluate/{tag}", "evaluate",
                 stage_fingerprint("evaluate", finetuning.fingerprint, study.split,
                                   study.reference, study.bins or None),
                 {"checkpoint": str(output / finetuning.name / CHECKPOINT),
                  "data": data.files, "split": study.split,
                  "reference": study.reference, "bins": study.bins or None,
                  "row": p["row"], "fraction": p["fraction"], "seed": p["seed"]},
                 needs=(finetuning.name,))


# --------------------------------------------------------------------------- configs


def _config(study: Study, name: str, overrides: Sequence[str], key: str) -> Config:
    """A training config with the study's overrides; errors name the study key too."""
    try:
        return load_config(name, list(overrides))
    except ConfigError as err:
        raise ConfigError(study.source, key, str(err)) from None


def _encoder_text(encoder: EncoderConfig) -> str:
    """An encoder as a TOML inline table (``{name = "part", embed_dims = [16, 16]}``)."""
    return toml_value({"name": encoder.name, **encoder.settings})


def toml_value(value: Any) -> str:
    """A TOML value for a ``--set`` override (encoder settings: numbers, strings, lists)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, Sequence):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


__all__ = ["DataStages", "Pretrained", "data_stages", "finetune_stages", "plan", "pretrain_stages",
           "toml_value"]

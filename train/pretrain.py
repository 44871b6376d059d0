"""Self-supervised pre-training (``resim train``): a config, data files, an output directory.

Builds the encoder and the method from the config, the training and validation batches
from the data (views of each group chosen by ``data.views``, splits by hard event), and
runs :func:`resim.train.loop.fit`. The checkpoint (``DIR/last.pt``) holds, besides what
the loop saves, ``kind = "pretrain"``, the encoder's name and settings (so fine-tuning
can rebuild it; its weights are the ``encoder.*`` entries of ``model``), the method (with
``trains_pooling``: whether the encoder's jet-level pooling was trained), the feature
names (RS3L's, or with detector-level jets JetClass's full set) and the data's labels,
variations and level.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .checkpoint import Checkpoint, EncoderSpec
from .config import Config, ConfigError
from .data import JetData, PretrainBatches
from .encoders import Encoder, build_encoder
from .encoders.base import SettingError
from .features import FEATURES, N_FEATURES, feature_names, known_features
from .loop import (
    CHECKPOINT,
    FitResult,
    Loader,
    Position,
    RunError,
    Runtime,
    fit,
    load_checkpoint,
    resumed_config,
    seed_everything,
    setup_runtime,
)
from .methods import Method, build_method

Paths = Sequence[str | Path]


def build_encoder_from(config: Config, n_features: int = N_FEATURES) -> Encoder:
    """The ``[encoder]`` of ``config`` (errors name the config file and section)."""
    config.require("encoder")
    assert config.encoder is not None  # require() said which config lacks it
    try:
        return build_encoder(config.encoder.name, n_features, **config.encoder.settings)
    except (TypeError, ValueError) as err:
        raise config.error(_setting_key("encoder", err), str(err)) from None


def build_pretraining(config: Config, n_features: int = N_FEATURES) -> Method:
    """Encoder + method of ``config``, initialised from ``run.seed``."""
    config.require("encoder", "method")
    assert config.method is not None  # require() said which config lacks it
    seed_everything(config.run.seed)
    encoder = build_encoder_from(config, n_features)
    try:
        return build_method(config.method.name, encoder, **config.method.settings)
    except (TypeError, ValueError) as err:
        raise config.error(_setting_key("method", err), str(err)) from None


def _setting_key(section: str, err: Exception) -> str:
    """The key path of a build error: the setting it names, else the section."""
    return f"{section}.{err.key}" if isinstance(err, SettingError) else section


def augmentation(config: Config) -> Callable | None:
    """What every pre-training view goes through: the ``[augment]`` chain, the views'
    random boost and rescaling (``data.views.boost``, ``pt_scale``), then the input frame
    (``data.frame``); None if nothing."""
    from .augment import build_augmentation
    from .frames import ViewKinematics, view_pipeline

    views = config.data.views
    steps = []
    if config.augment.names:
        steps.append(build_augmentation(list(config.augment.names),
                                        **config.augment.settings))
    kinematics = ViewKinematics(views.boost, views.pt_scale)
    if kinematics.active:
        steps.append(kinematics)
    return view_pipeline(steps, config.data.frame)


def encoder_spec(config: Config, features: Sequence[str] = FEATURES) -> EncoderSpec:
    """What rebuilds the encoder of ``config`` and feeds it: name, settings, inputs."""
    assert config.encoder is not None  # a config the encoder was built from
    return {"name": config.encoder.name, "settings": dict(config.encoder.settings),
            "n_features": len(features), "frame": config.data.frame}


def fractions(config: Config) -> dict[str, float]:
    return dict(zip(("train", "val", "test"), config.data.splits, strict=True))


def pretrain_batches(config: Config, data: JetData, split: str, rt: Runtime) -> PretrainBatches:
    """The pre-training batches of ``split`` for this process (views by ``data.views``;
    the features of the data's level)."""
    d, views = config.data, config.data.views
    if d.batch_size % views.count:
        raise ConfigError(config.source, "data.batch_size",
                          f"must be a multiple of data.views.count = {views.count} "
                          f"(batches hold whole groups), got {d.batch_size}")
    try:
        return PretrainBatches(
            data, split=split, batch_groups=d.batch_size // views.count, views=views.count,
            mode=views.mode, variations=views.variations or None,
            source="augment" if views.source == "augment" else "resim",
            augment=augmentation(config), max_particles=d.max_particles, max_jets=d.max_jets,
            seed=config.run.seed, shuffle=split == "train", fractions=fractions(config),
            rank=rt.rank, world_size=rt.world_size, feature_names=feature_names(data.level),
            fraction=d.pretrain_fraction if split == "train" else 1.0)
    except ValueError as err:
        raise RunError(f"{split} split: {err}") from None


def open_data(paths: Paths, classes: Mapping[str, Sequence[str]] | None = None,
              level: str = "auto") -> JetData:
    """The data files as one data set, jets of ``level`` (``data.level``); unreadable
    files are a :class:`RunError`."""
    from resim.dataset import DatasetError

    try:
        return JetData([str(p) for p in paths], classes or None, level=level)
    except (DatasetError, OSError, ValueError) as err:
        raise RunError(str(err)) from None


def stored_paths(state: Checkpoint, paths: Paths | None) -> list[str]:
    """The data of a resumed run: the stored paths, which ``paths`` (if given) must match."""
    stored = state["data"]["paths"]
    if paths:
        given = [str(Path(p).resolve()) for p in paths]
        if given != stored:
            raise RunError(f"--resume: the run was trained on {stored}, not {given}")
    return stored


def data_record(jets: JetData, **more: Any) -> dict[str, Any]:
    """What a checkpoint records of the data a run reads (``more``: what the run adds),
    and a resume compares (:func:`check_same_data`)."""
    return {"paths": [str(Path(p).resolve()) for p in jets.paths],
            "run_ids": list(jets.run_ids), "labels": list(jets.labels),
            "variations": list(jets.variations), **more, "level": jets.level}


def check_same_data(state: Checkpoint, now: Mapping[str, Any]) -> None:
    """A resumed run reads the files it started on: refuse them if they were remade
    since (another run's ``run_id``, other jets, labels, variations or level)."""
    then = state["data"]
    changed = [k for k in ("run_ids", "n_jets", "n_train_jets", "labels", "variations",
                           "level") if k in then and k in now and then[k] != now[k]]
    if changed:
        raise RunError(f"--resume: {', '.join(now['paths'])}: the data changed since the run "
                       f"started (other {', '.join(changed)}); resume with the files it "
                       "started on, or start a new run")


def pretrain(
    config: Config | None,
    data: Paths | None,
    output: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    overrides: Sequence[str] = (),
    progress: bool = True,
    rt: Runtime | None = None,
    stop_after_steps: int | None = None,
    on_step: Callable[[Position], None] | None = None,
) -> FitResult:
    """Pre-train the encoder of ``config`` on the files ``data``; checkpoints in ``output``.

    With ``resume`` the config and data come from ``output/last.pt`` (a ``config`` or
    ``data`` given as well must match; ``overrides`` may extend ``run.epochs``).
    """
    output = Path(output)
    if resume:
        if not (output / CHECKPOINT).is_file():
            raise RunError(f"{output}: nothing to resume (no {CHECKPOINT})")
        state = load_checkpoint(output / CHECKPOINT)
        if state.get("kind") != "pretrain":
            raise RunError(f"{output / CHECKPOINT} is not a pre-training run")
        config = resumed_config(state, config, overrides)
        data = stored_paths(state, data)
    elif config is None:
        raise RunError("give a config (--config)")
    else:
        config = config.with_overrides(overrides)
    if not data:
        raise RunError("give at least one data file (--data)")
    config.require("encoder", "method")
    rt = rt or setup_runtime(config.run.device, config.run.threads)

    jets = open_data(data, level=config.data.level)
    names = feature_names(jets.level)
    train = pretrain_batches(config, jets, "train", rt)
    val = None
    if config.run.validate and config.data.splits[1] > 0:
        try:
            val = Loader(pretrain_batches(config, jets, "val", rt), config.run.num_workers)
        except RunError:  # a tiny data set may have no usable validation group
            val = None
    model = build_pretraining(config, len(names))
    assert config.method is not None  # build_pretraining required it
    record = data_record(jets, n_jets=jets.n_jets, skipped_groups=train.skipped_groups)
    if resume:
        check_same_data(state, record)
    extra = {
        "kind": "pretrain",
        "encoder": encoder_spec(config, names),
        "method": {"name": config.method.name, "settings": dict(config.method.settings),
                   # fine-tuning trains the pooling of a fixed backbone if this is false
                   "trains_pooling": bool(model.trains_pooling)},
        "features": list(names),
        "data": record,
    }
    from .probe import validation_monitor

    monitor = validation_monitor(config, jets) if rt.main else None
    return fit(model, Loader(train, config.run.num_workers), val, config, output, rt,
               resume=resume, overwrite=overwrite, extra=extra, progress=progress,
               stop_after_steps=stop_after_steps, on_step=on_step, monitor=monitor)


def checkpoint_features(state: Checkpoint) -> tuple[str, ...]:
    """The input features a checkpoint's encoder was trained on (RS3L's if it says none)."""
    names = state.get("features", FEATURES)
    try:
        names = known_features(names)
    except ValueError as err:
        raise RunError(f"the checkpoint's encoder was trained on other input features: "
                       f"{err}") from None
    if state["encoder"].get("n_features", len(names)) != len(names):
        raise RunError(f"the checkpoint's encoder takes {state['encoder']['n_features']} "
                       f"inputs, its features are {list(names)}")
    return names


def encoder_from_checkpoint(state: Checkpoint) -> Encoder:
    """The encoder of a pre-training or fine-tuning checkpoint, with its trained weights."""
    spec = state["encoder"]
    encoder = build_encoder(spec["name"], len(checkpoint_features(state)), **spec["settings"])
    prefix = "encoder."
    weights = {k[len(prefix):]: v for k, v in state["model"].items() if k.startswith(prefix)}
    encoder.load_state_dict(weights)
    return encoder


__all__ = ["build_encoder_from", "build_pretraining", "checkpoint_features",
           "encoder_from_checkpoint", "pretrain"]

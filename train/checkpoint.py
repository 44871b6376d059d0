"""What a training checkpoint (``DIR/last.pt``) holds, as types.

:func:`resim.train.loop.load_checkpoint` returns a :class:`Checkpoint`: the dict
:func:`~resim.train.loop.fit` saves with ``torch.save``, so files written before these
types existed read the same. The loop writes the run's state (``format`` to
``versions``); the command that ran it adds what rebuilds the model (``kind`` and the
keys after it: :func:`resim.train.pretrain.pretrain`, :func:`resim.train.finetune.finetune`).
Keys that older checkpoints lack are not ``Required``: read them with ``.get``.
"""

from __future__ import annotations

from typing import Any, Required, TypedDict

from torch import Tensor


class ConfigRecord(TypedDict):
    """The run's config: the file's text and source, the overrides, and the effective
    settings (``Config.to_dict()``)."""

    text: str
    source: str
    overrides: list[str]
    effective: dict[str, Any]


class PositionRecord(TypedDict):
    """``Position`` as saved: ``batch`` batches of epoch ``epoch`` done, ``step`` in all."""

    epoch: int
    batch: int
    step: int


class EncoderSpec(TypedDict, total=False):
    """What rebuilds an encoder and feeds it (``n_features`` and ``frame`` since the
    feature sets and input frames: RS3L's 15 features and the lab frame before)."""

    name: Required[str]
    settings: Required[dict[str, Any]]
    n_features: int
    frame: str


class MethodRecord(TypedDict, total=False):
    """A pre-training's method; ``trains_pooling``: whether it trained the encoder's
    jet-level pooling (fine-tuning a fixed backbone trains it otherwise)."""

    name: Required[str]
    settings: Required[dict[str, Any]]
    trains_pooling: bool


class FinetuneRecord(TypedDict, total=False):
    """A fine-tuning's classifier settings (``FinetuneConfig``) and what it did."""

    head: Required[str]
    head_hidden: Required[list[int]]
    head_dropout: Required[float]
    backbone: Required[str]  # "floating" | "fixed"
    fraction: Required[float]
    train_pooling: bool
    backbone_lr: float | None
    calibrated_jets: int  # BatchNorm statistics of a fixed backbone calibrated on these


class DataRecord(TypedDict, total=False):
    """The data a run trained on."""

    paths: Required[list[str]]  # resolved
    run_ids: list[str]  # each file's run_id ("" if none): a resumed run checks them
    labels: list[str]
    variations: list[str]
    level: str
    n_jets: int  # pre-training
    skipped_groups: int  # pre-training
    n_train_jets: int  # fine-tuning: labelled jets
    trained_on: list[str]  # fine-tuning: the variations


class Checkpoint(TypedDict, total=False):
    """A checkpoint: the training loop's state, then the command's description."""

    format: Required[str]  # resim.train.loop.CHECKPOINT_FORMAT
    model: Required[dict[str, Tensor]]
    optimizer: Required[dict[str, Any]]
    scheduler: Required[dict[str, Any]]
    rng: Required[list[dict[str, Any]]]  # every rank's RNG states
    position: Required[PositionRecord]
    finished: Required[bool]
    log_accumulator: dict[str, Any]
    config: Required[ConfigRecord]
    world_size: int
    versions: dict[str, str]
    kind: str  # "pretrain" | "finetune"
    encoder: EncoderSpec
    method: MethodRecord  # pre-training
    features: list[str]  # input features (RS3L's if absent)
    data: DataRecord
    finetune: FinetuneRecord  # fine-tuning
    classes: dict[str, list[str]]  # fine-tuning: class -> data labels
    pretrained: str | None  # fine-tuning: the pre-training checkpoint (None: scratch)


__all__ = ["Checkpoint", "ConfigRecord", "DataRecord", "EncoderSpec", "FinetuneRecord",
           "MethodRecord", "PositionRecord"]

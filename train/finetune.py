"""Fine-tuning (``resim finetune``): a classifier on a pre-trained or a fresh encoder.

RS3L's options (Harris et al., arXiv 2403.07066): the pre-trained backbone either
"fixed" (frozen weights, BatchNorm statistics and dropout in evaluation mode) or
"floating" (trained along with the head), a linear or an MLP head, cross-entropy on the
class labels, Adam at 1e-4 with 1000 jets per batch, and a labelled fraction of the
training jets. Without a pre-training checkpoint the encoder is built from the config's
``[encoder]`` section with random weights: the fully supervised baseline.

A fixed backbone whose pre-training never ran the encoder's jet-level pooling (MPM and
JEPA train per-particle outputs; ParT's class-attention blocks and final LayerNorm stay
at their random initialisation, as the pre-training checkpoint records with
``method.trains_pooling = false``) keeps its particle blocks frozen but trains the
pooling with the head: freezing random weights would make the "fixed" comparison one of
random projections, not of pre-trained features. The pooling then acts as part of the
head: it reads only the frozen particle features. (The other choice, pooling the frozen
particle outputs by their mean as I-JEPA's linear probes do, would change the network
between pre-training methods.) ``finetune.train_pooling`` in the checkpoint says whether
this happened.

A fixed backbone's BatchNorm statistics are calibrated on the training jets before the
head trains (:func:`calibrate_batchnorm`): an encoder whose statistics were never
computed (one from random weights) or were computed on other jets would otherwise
normalise its inputs wrongly for the whole run (measured on a random ParT: linear-probe
AUC 0.669 uncalibrated, 0.886 calibrated). A floating pre-trained backbone trains at
``finetune.backbone_lr`` (RS3L's 1e-4), the head at ``optimizer.lr``: at one learning
rate of 1e-3 fine-tuning moved the encoder by about as much as pre-training had.
Fine-tuning refuses a checkpoint pre-trained with other ``data.splits``: its
validation and test jets would be trained on.

The checkpoint (``DIR/last.pt``) holds ``kind = "finetune"``, the encoder's name and
settings (with its input frame), the head, and the class mapping (class name -> label
names), so ``resim evaluate`` can rebuild the classifier and read any data with those
labels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional

from .checkpoint import Checkpoint, EncoderSpec
from .config import Config, ConfigError, FinetuneConfig
from .data import JetData, LabelledJets
from .encoders import Encoder
from .features import FEATURES, N_FEATURES, feature_names
from .frames import frame_transform
from .heads import linear_classifier, mlp_classifier
from .loop import (
    CHECKPOINT,
    FitResult,
    Loader,
    Position,
    RunError,
    Runtime,
    _sync_buffers,
    fit,
    load_checkpoint,
    resumed_config,
    seed_everything,
    setup_runtime,
)
from .pretrain import (
    Paths,
    build_encoder_from,
    check_same_data,
    checkpoint_features,
    data_record,
    encoder_from_checkpoint,
    encoder_spec,
    fractions,
    open_data,
    stored_paths,
)
from .trainable import Trainable


def pooling_parameters(encoder: Encoder) -> list[nn.Parameter]:
    """The parameters of the encoder's jet-level pooling (``Encoder.pooling_modules``)."""
    out: list[nn.Parameter] = []
    for name in encoder.pooling_modules:
        part = getattr(encoder, name)
        out += [part] if isinstance(part, nn.Parameter) else list(part.parameters())
    return out


class Classifier(Trainable):
    """An encoder and a classification head; ``model(batch) -> (cross-entropy, logs)``.

    ``frozen``: the encoder's weights are fixed and it runs in evaluation mode (RS3L's
    "fixed" backbone); ``train_pooling`` then keeps its pooling trainable (see the module
    docstring). The pooling has no dropout or BatchNorm, so evaluation mode changes
    nothing for it, and autograd stops at its inputs: the frozen blocks build no graph.
    """

    def __init__(self, encoder: Encoder, n_classes: int, head: str = "linear",
                 hidden: Sequence[int] = (128,), dropout: float = 0.1, frozen: bool = False,
                 train_pooling: bool = False, backbone_lr: float | None = None):
        super().__init__()
        self.encoder = encoder
        self.frozen = frozen
        self.backbone_lr = backbone_lr
        self.train_pooling = frozen and train_pooling and bool(encoder.pooling_modules)
        self.head: nn.Module
        if head == "linear":
            self.head = linear_classifier(encoder.embed_dim, n_classes)
        else:
            self.head = mlp_classifier(encoder.embed_dim, n_classes, tuple(hidden),
                                       dropout=dropout)
        if frozen:
            encoder.requires_grad_(False)
        if self.train_pooling:
            for p in pooling_parameters(encoder):
                p.requires_grad_(True)

    def parameter_groups(self, lr: float) -> list[dict[str, Any]]:
        """The optimiser's groups: the head (and a trained pooling) at ``lr``, a floating
        encoder at ``backbone_lr`` (None: ``lr``)."""
        pooling = {id(p) for p in pooling_parameters(self.encoder)} if self.train_pooling \
            else set()
        head = [p for p in self.head.parameters()] + \
            [p for p in self.encoder.parameters() if id(p) in pooling]
        backbone = [p for p in self.encoder.parameters()
                    if p.requires_grad and id(p) not in pooling]
        groups = [{"params": head, "lr": lr}]
        if backbone:
            groups.append({"params": backbone, "lr": self.backbone_lr or lr})
        return groups

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        if self.frozen:  # a fixed backbone is used as it was pre-trained
            self.encoder.eval()
        return self

    def logits(self, batch: dict[str, Tensor]) -> Tensor:
        fixed = self.frozen and not self.train_pooling
        with torch.set_grad_enabled(torch.is_grad_enabled() and not fixed):
            h = self.encoder(batch["x"], batch["v"], batch["mask"])
        return self.head(h)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        logits = self.logits(batch).float()
        loss = functional.cross_entropy(logits, batch["label"])
        accuracy = (logits.argmax(dim=1) == batch["label"]).float().mean()
        return loss, {"accuracy": float(accuracy)}

    @torch.no_grad()
    def probabilities(self, batch: dict[str, Tensor]) -> Tensor:
        """Class probabilities (N, C), in whatever mode the model is in."""
        return torch.softmax(self.logits(batch).float(), dim=1)


def build_classifier(encoder: Encoder, n_classes: int, cfg: FinetuneConfig,
                     train_pooling: bool = False, pretrained: bool = False) -> Classifier:
    """The classifier of ``cfg``; ``train_pooling``: the pre-training never trained the
    encoder's pooling (only matters for a fixed backbone); ``pretrained``: the encoder
    comes from pre-training (it then trains at ``cfg.backbone_lr``)."""
    return Classifier(encoder, n_classes, cfg.head, cfg.head_hidden, cfg.head_dropout,
                      frozen=cfg.backbone == "fixed", train_pooling=train_pooling,
                      backbone_lr=cfg.backbone_lr if pretrained and cfg.backbone == "floating"
                      else None)


@torch.no_grad()
def calibrate_batchnorm(module: nn.Module, run: Callable[[dict[str, Tensor]], Any],
                        batches: Iterable[dict[str, Tensor]],
                        device: torch.device | str = "cpu") -> int:
    """Recompute every BatchNorm's running statistics in ``module`` from ``batches``
    (equal-weight averages over the batches, ``run(batch)`` the forward pass); nothing
    else changes (dropout stays off, no gradients). Returns the jets used (0: no
    BatchNorm)."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    modes = {m: m.training for m in module.modules()}
    momenta = [m.momentum for m in norms]
    for m in module.modules():
        m.training = False
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
        m.training = True
    jets = 0
    for batch in batches:
        run({k: v.to(device) for k, v in batch.items()})
        jets += len(batch["mask"])
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    for m, mode in modes.items():
        m.training = mode
    return jets


#: Batches of training jets a fixed backbone's BatchNorm statistics are calibrated on.
CALIBRATION_BATCHES = 20


def calibrate_encoder(encoder: Encoder, config: Config, data: JetData, frame: str,
                      rt: Runtime | None = None, features: Sequence[str] = FEATURES) -> int:
    """Calibrate ``encoder``'s BatchNorm statistics on the training split's jets (the
    variations of ``data.variations``; all groups, labels unused), at most
    :data:`CALIBRATION_BATCHES` batches; under DDP rank 0's result is broadcast."""
    jets = labelled_jets(config, data, "train", rt, features=features, frame=frame)
    device = rt.device if rt else "cpu"
    encoder.to(device)
    n = calibrate_batchnorm(encoder, lambda b: encoder(b["x"], b["v"], b["mask"]),
                            islice(iter(jets), CALIBRATION_BATCHES), device)
    if rt is not None:
        _sync_buffers(encoder, rt)
    return n


def check_splits(config: Config, source: Checkpoint, checkpoint: str | Path) -> None:
    """Refuse a pre-training checkpoint whose ``data.splits`` differ from ``config``'s:
    the fine-tuning would train on its validation and test jets, or test on its
    training jets."""
    stored = source.get("config", {}).get("effective", {}).get("data", {}).get("splits")
    if stored is not None and [float(x) for x in stored] != list(config.data.splits):
        raise ConfigError(config.source, "data.splits",
                          f"{list(config.data.splits)} differ from the splits {list(stored)} "
                          f"the checkpoint {checkpoint} was pre-trained with; fine-tune with "
                          f"the same (--set 'data.splits={list(stored)}')")


def variations_arg(names: Sequence[str]) -> str | list[str]:
    """``data.variations`` as ``LabelledJets`` takes it: nominal by default, ``["all"]``: all."""
    if not names:
        return "nominal"
    return "all" if list(names) == ["all"] else list(names)


def labelled_jets(config: Config, data: JetData, split: str, rt: Runtime | None, *,
                  fraction: float = 1.0, shuffle: bool = False,
                  variations: str | Sequence[str] | None = None,
                  batch_size: int | None = None, features: Sequence[str] = FEATURES,
                  frame: str = "lab") -> LabelledJets:
    """One jet per row of ``split`` (``data.variations`` unless ``variations`` is given),
    with the encoder's input ``features`` in its input ``frame``."""
    d = config.data
    try:
        return LabelledJets(
            data, split=split, variations=variations or variations_arg(d.variations),
            fraction=fraction, batch_size=batch_size or d.batch_size,
            max_particles=d.max_particles, max_jets=d.max_jets, shuffle=shuffle,
            drop_last=False,  # small labelled fractions may hold less than one batch
            seed=config.run.seed, fractions=fractions(config),
            rank=rt.rank if rt else 0, world_size=rt.world_size if rt else 1,
            feature_names=features, transform=frame_transform(frame))
    except ValueError as err:
        raise RunError(f"{split} split: {err}") from None


def class_mapping(config: Config, data_labels: Sequence[str]) -> dict[str, list[str]]:
    """``data.classes``, or every label of the data its own class."""
    if config.data.classes:
        return {name: list(labels) for name, labels in config.data.classes.items()}
    return {label: [label] for label in data_labels}


def classes_override(classes: Mapping[str, Sequence[str]]) -> str:
    """``--classes`` as a config override: ``data.classes={qcd=["q","g"], top=["top"]}``."""
    items = ", ".join(f'{name} = [{", ".join(f"{label!r}" for label in labels)}]'
                      for name, labels in classes.items())
    return "data.classes={" + items.replace("'", '"') + "}"


def finetune(
    config: Config | None,
    data: Paths | None,
    output: str | Path,
    checkpoint: str | Path | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    overrides: Sequence[str] = (),
    progress: bool = True,
    rt: Runtime | None = None,
    stop_after_steps: int | None = None,
    on_step: Callable[[Position], None] | None = None,
) -> FitResult:
    """Fine-tune a classifier on the labelled jets of ``data``; checkpoints in ``output``.

    ``checkpoint``: a pre-training checkpoint whose encoder is fine-tuned; without it the
    config's ``[encoder]`` is trained from scratch. ``[finetune]`` (defaults if absent)
    chooses head, backbone and labelled fraction. The jets are those of ``data.level``;
    the input features the pre-trained encoder's (from scratch: those of the level).
    """
    output = Path(output)
    spec: EncoderSpec
    if resume:
        if not (output / CHECKPOINT).is_file():
            raise RunError(f"{output}: nothing to resume (no {CHECKPOINT})")
        state = load_checkpoint(output / CHECKPOINT)
        if state.get("kind") != "finetune":
            raise RunError(f"{output / CHECKPOINT} is not a fine-tuning run")
        config = resumed_config(state, config, overrides)
        data = stored_paths(state, data)
        spec, pretrained = state["encoder"], state["pretrained"]
        names = checkpoint_features(state)
        encoder = encoder_from_spec(spec)  # weights come with the model state
        pooling_untrained = bool(state["finetune"].get("train_pooling", False))
    else:
        if config is None:
            raise RunError("give a fine-tuning config (--config)")
        config = config.with_overrides(overrides)
        seed_everything(config.run.seed)
        if checkpoint is not None:
            source = load_checkpoint(checkpoint)
            if source.get("kind") != "pretrain":
                raise RunError(f"{checkpoint}: not a pre-training checkpoint (kind "
                               f"{source.get('kind')!r}); fine-tune the output of resim train")
            check_splits(config, source, checkpoint)
            encoder, spec = encoder_from_checkpoint(source), source["encoder"]
            names = checkpoint_features(source)
            pretrained = str(Path(checkpoint).resolve())
            pooling_untrained = not source["method"].get("trains_pooling", True)
        elif config.encoder is not None:
            if not data:
                raise RunError("give at least one data file (--data)")
            names = feature_names(open_data(data, level=config.data.level).level)
            encoder = build_encoder_from(config, len(names))
            spec = encoder_spec(config, names)
            pretrained = None
            pooling_untrained = False  # random weights everywhere: a fixed one stays fixed
        else:
            raise RunError("give --checkpoint (a pre-trained encoder), or a config with an "
                           "[encoder] section to train one from scratch")
    if not data:
        raise RunError("give at least one data file (--data)")
    rt = rt or setup_runtime(config.run.device, config.run.threads)
    ft = config.finetune or FinetuneConfig()

    frame = spec.get("frame", "lab")
    probe = open_data(data, level=config.data.level)
    classes = class_mapping(config, probe.labels)
    if len(classes) < 2:
        raise RunError(f"data: every jet of {', '.join(str(p) for p in data)} is labelled "
                       f"{', '.join(probe.labels)}: a classifier needs two classes or more; "
                       "add data of another label (e.g. --data qcd.h5)")
    jets = open_data(data, classes, level=config.data.level)
    train = labelled_jets(config, jets, "train", rt, fraction=ft.fraction, shuffle=True,
                          features=names, frame=frame)
    val = None
    if config.run.validate and config.data.splits[1] > 0:
        try:
            # shuffled only to deal every process the same number of batches (the
            # remainder is padded), which DDP's collective calls need
            val = Loader(labelled_jets(config, jets, "val", rt, shuffle=rt.distributed,
                                       features=names, frame=frame), config.run.num_workers)
        except RunError:
            val = None
    model = build_classifier(encoder, len(classes), ft, train_pooling=pooling_untrained,
                             pretrained=pretrained is not None)
    calibrated = 0
    if model.frozen and not resume:
        calibrated = calibrate_encoder(encoder, config, jets, frame, rt, names)
    record = data_record(jets, n_train_jets=train.n_jets,
                         trained_on=list(train.variation_names))
    if resume:
        check_same_data(state, record)
    extra = {
        "kind": "finetune",
        "encoder": spec,
        "finetune": {"head": ft.head, "head_hidden": list(ft.head_hidden),
                     "head_dropout": ft.head_dropout, "backbone": ft.backbone,
                     "fraction": ft.fraction, "train_pooling": model.train_pooling,
                     "backbone_lr": model.backbone_lr,
                     "calibrated_jets": state["finetune"].get("calibrated_jets", 0) if resume
                     else calibrated},
        "classes": classes,
        "pretrained": pretrained,
        "features": list(names),
        "data": record,
    }
    return fit(model, Loader(train, config.run.num_workers), val, config, output, rt,
               resume=resume, overwrite=overwrite, extra=extra, progress=progress,
               stop_after_steps=stop_after_steps, on_step=on_step)


def encoder_from_spec(spec: EncoderSpec) -> Encoder:
    from .encoders import build_encoder

    return build_encoder(spec["name"], spec.get("n_features", N_FEATURES), **spec["settings"])


def classifier_from_checkpoint(state: Checkpoint) -> Classifier:
    """The trained classifier of a fine-tuning checkpoint, in evaluation mode."""
    if state.get("kind") != "finetune":
        raise RunError(f"not a fine-tuning checkpoint (kind {state.get('kind')!r}); "
                       "evaluate the output of resim finetune")
    checkpoint_features(state)  # one this resim computes
    ft = state["finetune"]
    cfg = FinetuneConfig(ft["head"], tuple(ft["head_hidden"]), ft["head_dropout"],
                         ft["backbone"], ft["fraction"])
    model = build_classifier(encoder_from_spec(state["encoder"]), len(state["classes"]), cfg,
                             train_pooling=bool(ft.get("train_pooling", False)))
    model.load_state_dict(state["model"])
    return model.eval()


__all__ = ["Classifier", "build_classifier", "classifier_from_checkpoint", "finetune"]

"""The one training loop behind ``resim train`` and ``resim finetune``.

The loop knows nothing about jets or objectives. It trains a
:class:`~resim.train.trainable.Trainable` model:

    loss, logs = model(batch)      # batch: dict of tensors; logs: dict[str, float]
    model.after_step()             # e.g. an EMA update (no-op by default)
    model.parameter_groups(lr)     # optimiser parameter groups (own lr each)
    model.set_total_steps(n)       # told the run's length before training
    model.ddp_find_unused_parameters  # True if some parameters get no gradient

(every :class:`~resim.train.methods.Method` is one, and so is the fine-tuning classifier),
on *batch sources* (:class:`Batches`: ``len()`` batches per epoch on this process, and
``epoch(e, start_batch)`` iterating them deterministically from ``start_batch`` on).

What it adds: Adam/AdamW and the learning-rate schedule (per step), gradient clipping,
CUDA with bf16 autocast when present (else CPU float32), DDP when started by ``torchrun``
(``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in the environment; gloo on CPU, nccl on GPU),
seeds, a validation loss each epoch, ``DIR/metrics.csv`` and TensorBoard events in
``DIR/tb/``, a progress bar, and checkpoints ``DIR/last.pt`` written atomically at each
epoch end and every ``run.checkpoint_every`` steps.

Resuming is exact on CPU: a checkpoint holds the position (epoch, batches done in it,
global step), the optimiser, scheduler and every RNG state (torch, numpy, python; per
rank), so continuing from it gives the same weights, bit for bit, as never stopping —
provided the batch sources are deterministic in (epoch, start_batch) and do not draw
from the global RNGs (``resim.train.data``'s loaders take their own seeds).
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
import platform
import random
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar, cast

import click
import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from resim.errors import ResimError

from .checkpoint import Checkpoint
from .config import Config, OptimizerConfig, ScheduleConfig, parse_config
from .trainable import Trainable

log = logging.getLogger(__name__)

#: The model a :func:`fit` trains, as its ``monitor`` receives it.
TrainableT = TypeVar("TrainableT", bound=Trainable)

CHECKPOINT = "last.pt"
METRICS_CSV = "metrics.csv"
TENSORBOARD = "tb"
CHECKPOINT_FORMAT = "resim-train/1"
#: What ``--overwrite`` removes from an output directory (nothing else is touched).
RUN_FILES = (CHECKPOINT, METRICS_CSV, TENSORBOARD, "metrics.json", "roc.png", "scores.npz",
             "shift.json", "shift.png", "config.toml")


class RunError(ResimError, RuntimeError):
    """A problem with the output directory or a checkpoint (a user mistake: exit code 2)."""


class Batches(Protocol):
    """What the loop iterates: a deterministic, resumable sequence of batch dicts per epoch."""

    def __len__(self) -> int: ...

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterable[dict[str, Tensor]]: ...


class Loader:
    """A ``resim.train.data`` dataset (``PretrainBatches``, ``LabelledJets``) as :class:`Batches`.

    Each epoch gets a fresh loader from :func:`resim.train.data.make_loader` (``set_epoch``
    must reach the workers), which never draws from the global torch RNG.
    """

    def __init__(self, dataset: Any, num_workers: int = 0):
        self.dataset = dataset
        self.num_workers = num_workers

    def __len__(self) -> int:
        return len(self.dataset.batches())

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterable[dict[str, Tensor]]:
        from .data import make_loader

        self.dataset.set_epoch(epoch, start_batch)
        return make_loader(self.dataset, self.num_workers)


# --------------------------------------------------------------------------- runtime


@dataclass(frozen=True)
class Runtime:
    """Where this process runs: device, autocast dtype, and its place in a DDP job."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    autocast: torch.dtype | None = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes files and prints."""
        return self.rank == 0

    def autocast_context(self) -> contextlib.AbstractContextManager:
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def setup_runtime(device: str = "auto", threads: int = 0) -> Runtime:
    """Pick the device and, under ``torchrun``, join the process group.

    ``device``: ``"auto"`` (CUDA if available, else CPU), ``"cpu"`` or ``"cuda"``. DDP is
    used when ``WORLD_SIZE`` > 1 in the environment; the backend is nccl on CUDA and gloo
    on CPU. Calling it again in an initialised process re-uses the group. ``threads`` > 0
    sets torch's CPU threads.
    """
    if threads > 0:
        torch.set_num_threads(threads)
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise RunError("run.device = 'cuda' but no CUDA device is available")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    if use_cuda:
        torch.cuda.set_device(local)
        return Runtime(torch.device("cuda", local), rank, world, local, torch.bfloat16)
    return Runtime(torch.device("cpu"), rank, world, local, None)


# --------------------------------------------------------------------------- seeds, RNG


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's global generators (model initialisation)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every global RNG state a training step may draw from (dropout, augmentations)."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- optimiser


def build_optimizer(params: Iterable[nn.Parameter] | Iterable[dict[str, Any]],
                    cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """Adam (RS3L) or AdamW with the configured learning rate, betas and weight decay
    (``params`` may be parameter groups with learning rates of their own)."""
    kind = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[cfg.name]
    return kind(list(params), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


@dataclass(frozen=True)
class LRSchedule:
    """Learning-rate factor per optimiser step (a picklable callable for ``LambdaLR``).

    ``step``: ``gamma ** (s // (step_epochs * steps_per_epoch))`` (RS3L: 0.5 every 50
    epochs). ``cosine``: from 1 down to ``min_lr_ratio`` over the steps after warm-up.
    ``constant``: 1. A linear warm-up over the first ``warmup_steps`` multiplies any of them.
    """

    name: str
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int = 0
    step_epochs: int = 50
    gamma: float = 0.5
    min_lr_ratio: float = 0.0

    @classmethod
    def from_config(cls, cfg: ScheduleConfig, steps_per_epoch: int, epochs: int) -> LRSchedule:
        return cls(cfg.name, steps_per_epoch, steps_per_epoch * epochs,
                   round(cfg.warmup_epochs * steps_per_epoch), cfg.step_epochs, cfg.gamma,
                   cfg.min_lr_ratio)

    def __call__(self, step: int) -> float:
        warm = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        if self.name == "step":
            return warm * self.gamma ** (step // (self.step_epochs * self.steps_per_epoch))
        if self.name == "cosine":
            span = max(1, self.total_steps - self.warmup_steps - 1)
            progress = min(1.0, max(0, step - self.warmup_steps) / span)
            cosine = 0.5 * (1 + math.cos(math.pi * progress))
            return warm * (self.min_lr_ratio + (1 - self.min_lr_ratio) * cosine)
        return warm


# --------------------------------------------------------------------------- checkpoints


@dataclass
class Position:
    """Where a run is: ``batch`` batches of epoch ``epoch`` done, ``step`` steps in all."""

    epoch: int = 0
    batch: int = 0
    step: int = 0


def save_checkpoint(path: Path, state: Mapping[str, Any]) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename it into place.

    A run killed while writing leaves the previous checkpoint intact.
    """
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """A checkpoint written by :func:`fit` (on CPU; :class:`~resim.train.checkpoint.Checkpoint`
    says what it holds), with a clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # truncated or foreign files: say which file, not a traceback
        raise RunError(f"{path}: not a readable checkpoint ({err})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise RunError(f"{path}: not a resim training checkpoint")
    return cast(Checkpoint, state)


def versions() -> dict[str, str]:
    from resim import __version__

    return {"resim": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def prepare_output(output: Path, resume: bool, overwrite: bool, rt: Runtime) -> bool:
    """Check the output directory; returns True when there is a run to resume.

    Refuses to mix runs: an output holding a run needs ``--resume`` or ``--overwrite``;
    ``--overwrite`` removes only the files a run writes (:data:`RUN_FILES`).
    """
    if resume and overwrite:
        raise RunError("--resume and --overwrite exclude each other")
    existing = [name for name in RUN_FILES if (output / name).exists()]
    if resume:
        if not (output / CHECKPOINT).is_file():
            raise RunError(f"{output}: nothing to resume (no {CHECKPOINT})")
        return True
    if existing and not overwrite:
        raise RunError(f"{output} holds another run ({', '.join(existing)}); pass --resume "
                       "to continue it or --overwrite to replace it")
    rt.barrier()  # every rank has looked before rank 0 removes anything
    if rt.main:
        for name in existing:
            target = output / name
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        output.mkdir(parents=True, exist_ok=True)
    rt.barrier()
    return False


#: Settings a resumed run may change: they do not alter the result (or, for ``epochs``,
#: extend it on purpose).
RESUMABLE_CHANGES = ("run.epochs", "run.checkpoint_every", "run.log_every", "run.device",
                     "run.num_workers", "run.threads", "run.validate", "run.monitor_every")


def resumed_config(state: Checkpoint, given: Config | None,
                   overrides: Sequence[str] = ()) -> Config:
    """The config of the run in checkpoint ``state``, with new ``overrides`` applied.

    A config given again on the command line must match the stored one except for
    :data:`RESUMABLE_CHANGES`; anything else would not continue the same run.
    """
    stored = state["config"]
    base = parse_config(stored["text"], stored["source"], stored["overrides"])
    config = base.with_overrides(overrides)
    changed = _changes(base, config)
    if changed:
        raise RunError(f"--resume: {', '.join(changed)} cannot change in a resumed run (only "
                       f"{', '.join(RESUMABLE_CHANGES)} can); start a new run instead")
    if given is not None:
        changed = _changes(config, given.with_overrides(overrides))
        if changed:
            raise RunError(f"--resume: {given.source} differs from the run's config in "
                           f"{', '.join(changed)}; resume without --config (the run keeps "
                           "its own), or start a new run")
    return config


def _changes(a: Config, b: Config) -> list[str]:
    """Keys whose values differ between ``a`` and ``b``, except the resumable ones."""
    x, y = _flat(a.to_dict()), _flat(b.to_dict())
    return [k for k in sorted(set(x) | set(y))
            if x.get(k) != y.get(k) and k not in RESUMABLE_CHANGES]


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# --------------------------------------------------------------------------- logging


class MetricsLog:
    """``metrics.csv`` rows and TensorBoard scalars, written by rank 0 only.

    On resume, rows and events after the checkpoint's step are dropped first, so the
    files read as if the run had never stopped.
    """

    BASE = ("step", "epoch", "split", "loss", "lr", "jets_per_s")

    def __init__(self, output: Path, enabled: bool, resume_step: int | None):
        self.path = output / METRICS_CSV
        self.enabled = enabled
        self.columns: list[str] | None = None
        self.writer = None
        if not enabled:
            return
        if resume_step is not None and self.path.exists():
            with self.path.open(newline="") as f:
                rows = list(csv.DictReader(f))
            if rows:
                self.columns = list(rows[0])
                kept = [r for r in rows if int(r["step"]) <= resume_step]
                self._rewrite(kept, self.columns)
        from torch.utils.tensorboard import SummaryWriter

        purge = None if resume_step is None else resume_step + 1
        self.writer = SummaryWriter(str(output / TENSORBOARD), purge_step=purge)

    def _rewrite(self, rows: list[dict[str, str]], columns: list[str]) -> None:
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, columns)
            w.writeheader()
            w.writerows(rows)
        os.replace(tmp, self.path)

    def write(self, step: int, epoch: int, split: str, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": step, "epoch": epoch, "split": split, **values}
        if self.columns is None:
            extra = sorted(k for k in values if k not in self.BASE)
            self.columns = [*self.BASE, *extra]
            with self.path.open("w", newline="") as f:
                csv.DictWriter(f, self.columns).writeheader()
        new = sorted(k for k in values if k not in self.columns)
        if new:  # e.g. the monitor's numbers after the first training rows: widen the file
            with self.path.open(newline="") as f:
                rows = list(csv.DictReader(f))
            self.columns = [*self.columns, *new]
            self._rewrite(rows, self.columns)
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.columns, restval="", extrasaction="ignore").writerow(row)
        for name, value in values.items():
            if self.writer is not None:
                self.writer.add_scalar(f"{split}/{name}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


@dataclass
class Averages:
    """Running means of named numbers, weighted (e.g. by jets)."""

    sums: dict[str, float] = field(default_factory=dict)
    weight: float = 0.0

    def add(self, values: dict[str, float], weight: float = 1.0) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v * weight
        self.weight += weight

    def means(self) -> dict[str, float]:
        return {k: v / self.weight for k, v in self.sums.items()} if self.weight else {}

    def all_reduce(self, rt: Runtime) -> Averages:
        """The sums over every rank (identical on all ranks afterwards)."""
        if not rt.distributed:
            return self
        keys = sorted(self.sums)
        t = torch.tensor([self.sums[k] for k in keys] + [self.weight], dtype=torch.float64)
        dist.all_reduce(t)
        return Averages(dict(zip(keys, t[:-1].tolist(), strict=True)), float(t[-1]))


# --------------------------------------------------------------------------- the loop


@dataclass
class FitResult:
    """What a call to :func:`fit` ended with."""

    position: Position
    finished: bool
    train_loss: float | None = None
    val_loss: float | None = None
    jets_per_s: float | None = None
    monitor: dict[str, float] = field(default_factory=dict)  # the last monitor's numbers
    seconds: float = 0.0
    model: nn.Module | None = field(default=None, repr=False)  # the trained (unwrapped) model


def _to_device(batch: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _global_min(n: int, rt: Runtime) -> int:
    """The smallest ``n`` over ranks: every rank must take the same number of steps."""
    if not rt.distributed:
        return n
    t = torch.tensor([n], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t)


def _gather_rng(rt: Runtime) -> list[dict[str, Any]]:
    state = rng_state()
    if not rt.distributed:
        return [state]
    states: list[Any] = [None] * rt.world_size
    dist.all_gather_object(states, state)
    return states


def fit(
    model: TrainableT,
    train: Batches,
    val: Batches | None,
    config: Config,
    output: Path,
    rt: Runtime,
    *,
    resume: bool = False,
    overwrite: bool = False,
    extra: dict[str, Any] | None = None,
    progress: bool = True,
    stop_after_steps: int | None = None,
    on_step: Callable[[Position], None] | None = None,
    monitor: Callable[[TrainableT], dict[str, float]] | None = None,
) -> FitResult:
    """Train ``model`` on ``train`` for ``config.run.epochs`` epochs, writing into ``output``.

    ``extra`` goes into every checkpoint (what the command needs to rebuild the model:
    encoder settings, data description, class names). With ``resume`` the model, optimiser,
    scheduler, RNG states and position come from ``output/last.pt``. ``stop_after_steps``
    ends the call after that many global steps (with a checkpoint), ``on_step`` is called
    after each step (its exceptions stop the run as a crash would). ``monitor(model)``
    (rank 0 only, every ``run.monitor_every`` epochs) returns numbers about the model that
    join the epoch's validation row, with its cost in seconds (``monitor_seconds``) beside
    the epoch's training time (``epoch_seconds``).
    """
    output = Path(output)
    resuming = prepare_output(output, resume, overwrite, rt)
    started = time.perf_counter()
    run = TrainingRun(_on_device(model, config, rt), train, config, output, rt, extra)
    if resuming:
        run.restore(load_checkpoint(output / CHECKPOINT))
        if run.pos.epoch > config.run.epochs:  # it would end, done, and say it did that many
            raise RunError(f"--resume: the run in {output} has done {run.pos.epoch} epochs, "
                           f"more than run.epochs = {config.run.epochs}; give more epochs to "
                           "train longer")
    else:
        # Ranks share the model's initial weights (seeded before it was built; DDP also
        # broadcasts them) but draw their own dropout masks from here on.
        seed_everything(config.run.seed * 7919 + rt.rank + 1)
    run.open_log(resume_step=run.pos.step if resuming else None)
    if rt.main:
        (output / "config.toml").write_text(_config_copy(config))
    result = FitResult(run.pos, finished=run.pos.epoch >= config.run.epochs, model=run.model)
    if result.finished:
        run.log.close()
        return result
    try:
        while run.pos.epoch < config.run.epochs:
            if run.train_epoch(progress, stop_after_steps, on_step):
                return result  # stopped inside the epoch, after a checkpoint
            run.end_epoch(val, result, monitor, progress)
            if stop_after_steps is not None and run.pos.step >= stop_after_steps:
                break
    finally:
        run.log.close()
    _sync_buffers(run.model, rt)
    result.seconds = time.perf_counter() - started
    return result


def _on_device(model: TrainableT, config: Config, rt: Runtime) -> TrainableT:
    """``model`` on this process's device (with SyncBatchNorm where asked for)."""
    model.to(rt.device)
    if rt.distributed and config.run.sync_batchnorm:
        if rt.device.type != "cuda":
            raise RunError("run.sync_batchnorm needs CUDA: torch's SyncBatchNorm runs on GPUs "
                           "only")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


class Throughput:
    """Jets per second of an epoch, from its first batch's arrival (start-up, the first
    DataLoader fill and validation do not count)."""

    def __init__(self) -> None:
        self.jets = 0
        self.clock: float | None = None

    def start(self) -> None:
        if self.clock is None:
            self.clock = time.perf_counter()

    def add(self, jets: int) -> float:
        """Count ``jets`` more; returns the rate so far."""
        self.jets += jets
        return self.rate()

    def rate(self) -> float:
        return self.jets / max(self.seconds(), 1e-9)

    def seconds(self) -> float:
        return time.perf_counter() - self.clock if self.clock is not None else 0.0


class TrainingRun(Generic[TrainableT]):
    """The state of one :func:`fit` call: the model and its DDP wrapper, the optimiser and
    learning-rate schedule, where the run is (:class:`Position`), the running means of
    the logged numbers, and the logs. Its methods are the loop's steps."""

    def __init__(self, model: TrainableT, train: Batches, config: Config, output: Path,
                 rt: Runtime, extra: dict[str, Any] | None):
        self.model, self.train, self.config, self.output, self.rt = \
            model, train, config, output, rt
        self.extra = extra or {}
        self.optimizer = build_optimizer(model.parameter_groups(config.optimizer.lr),
                                         config.optimizer)
        self.steps_per_epoch = _global_min(len(train), rt)
        if self.steps_per_epoch < 1:
            raise RunError("the training split holds less than one batch per process; use "
                           "more data, a smaller data.batch_size, or fewer processes")
        self.schedule = LRSchedule.from_config(config.optimizer.schedule, self.steps_per_epoch,
                                               config.run.epochs)
        model.set_total_steps(self.schedule.total_steps)  # e.g. JEPA's EMA spans the run
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.schedule)
        self.pos = Position()
        self.accumulated = Averages()  # since the last metrics.csv training row
        self.epoch_loss = Averages()  # this epoch's
        self.speed = Throughput()  # this epoch's
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.net: nn.Module = model
        self.log = MetricsLog(output, False, None)

    # -- start ---------------------------------------------------------------------------
    def restore(self, state: Checkpoint) -> None:
        """Continue the run of checkpoint ``state``: weights, optimiser, schedule (the
        current config's, e.g. more epochs), position, running means and RNG states."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        # the current config's (e.g. more epochs), one per parameter group as LambdaLR has
        self.scheduler.lr_lambdas = [self.schedule] * len(self.optimizer.param_groups)
        for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs,
                               strict=True):
            group["lr"] = base * self.schedule(self.scheduler.last_epoch)
        self.pos = Position(**state["position"])
        self.accumulated = Averages(**state.get("log_accumulator", {}))
        self._restore_rng(state["rng"])

    def _restore_rng(self, rngs: list[dict[str, Any]]) -> None:
        rt = self.rt
        if len(rngs) == rt.world_size:
            set_rng_state(rngs[rt.rank])
            return
        # another number of processes: no exact continuation possible anyway
        seed_everything(self.config.run.seed + 1_000_003 * (self.pos.step + 1) + rt.rank)
        # ranks deal an epoch's batches round-robin: b steps on W processes covered
        # about the first b * W batches, which take b * W / W' steps on W' processes
        self.pos.batch = self.pos.batch * len(rngs) // rt.world_size
        if rt.main:
            log.warning("resuming a %d-process run on %d: it continues, but not "
                        "bit-identically", len(rngs), rt.world_size)

    def open_log(self, resume_step: int | None) -> None:
        """``metrics.csv`` and TensorBoard (rank 0), and the DDP wrapper of the model."""
        self.log = MetricsLog(self.output, self.rt.main, resume_step)
        self.net = _parallel(self.model, self.rt)

    # -- training ------------------------------------------------------------------------
    def train_epoch(self, progress: bool, stop_after_steps: int | None,
                    on_step: Callable[[Position], None] | None) -> bool:
        """The rest of the current epoch's steps; True if the run stops inside it."""
        self.model.train()
        self.epoch_loss = Averages()
        self.speed = Throughput()
        pos = self.pos
        bar = _progress(pos, self.steps_per_epoch, self.config.run.epochs,
                        progress and self.rt.main)
        with bar:
            batches = iter(self.train.epoch(pos.epoch, pos.batch))
            while pos.batch < self.steps_per_epoch:
                loss, n_jets = self.step(next(batches))
                rate = self.speed.add(n_jets)
                bar.update(1, f"loss {loss:.4g}  {rate:.0f} jets/s")
                self.log_training(rate)
                if self.step_done(stop_after_steps, on_step):
                    return True
        return False

    def step(self, batch: dict[str, Tensor]) -> tuple[float, int]:
        """One optimiser step on ``batch``; its loss, and its jets over all ranks."""
        batch = _to_device(batch, self.rt.device)
        self.speed.start()
        with self.rt.autocast_context():
            loss, logs = self.net(batch)
        if not torch.isfinite(loss):  # one step more and every weight is NaN
            raise RunError(f"the loss is {float(loss.detach())} at step {self.pos.step + 1} "
                           f"(epoch {self.pos.epoch + 1}): the training diverged; lower "
                           "optimizer.lr or set optimizer.grad_clip")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.optimizer.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.trainable, self.config.optimizer.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.model.after_step()
        self.pos.batch += 1
        self.pos.step += 1
        n_jets = len(batch["mask"]) * self.rt.world_size
        values = {"loss": float(loss.detach()), **logs}
        self.epoch_loss.add(values, n_jets)
        self.accumulated.add(values, n_jets)
        return values["loss"], n_jets

    def log_training(self, rate: float) -> None:
        """A ``metrics.csv`` training row every ``run.log_every`` steps."""
        if self.pos.step % self.config.run.log_every == 0:
            self.log.write(self.pos.step, self.pos.epoch, "train", {
                **self.accumulated.means(), "lr": self.optimizer.param_groups[0]["lr"],
                "jets_per_s": rate})
            self.accumulated = Averages()

    def step_done(self, stop_after_steps: int | None,
                  on_step: Callable[[Position], None] | None) -> bool:
        """Checkpoints inside an epoch (every ``run.checkpoint_every`` steps, and before a
        stop), then the caller's ``on_step``; True if the run stops here."""
        pos = self.pos
        end_of_epoch = pos.batch == self.steps_per_epoch
        stopping = stop_after_steps is not None and pos.step >= stop_after_steps
        every = self.config.run.checkpoint_every
        if not end_of_epoch and ((every and pos.step % every == 0) or stopping):
            self.checkpoint()
        if on_step is not None:
            on_step(pos)
        return stopping and not end_of_epoch

    # -- end of an epoch -----------------------------------------------------------------
    def end_epoch(self, val: Batches | None, result: FitResult,
                  monitor: Callable[[TrainableT], dict[str, float]] | None,
                  progress: bool) -> None:
        """The epoch's training loss and speed, its validation row, the next position, a
        checkpoint and (``progress``) the epoch's line."""
        means = self.epoch_loss.all_reduce(self.rt).means()
        result.train_loss = means.get("loss")
        if self.speed.clock is not None:
            result.jets_per_s = self.speed.rate()
        row = self.validation_row(val, result, monitor, self.speed.seconds())
        if row:
            self.log.write(self.pos.step, self.pos.epoch, "val", row)
        self.pos.epoch += 1
        self.pos.batch = 0
        result.finished = self.pos.epoch >= self.config.run.epochs
        self.checkpoint(finished=result.finished)
        if self.rt.main and progress:
            log.info(_epoch_line(self.pos.epoch, self.config.run.epochs, result))

    def validation_row(self, val: Batches | None, result: FitResult,
                       monitor: Callable[[TrainableT], dict[str, float]] | None,
                       epoch_seconds: float) -> dict[str, float]:
        """The validation loss and logs (``run.validate``), and the monitor's numbers with
        its cost (rank 0, every ``run.monitor_every`` epochs)."""
        run, row = self.config.run, {}
        if val is not None and run.validate:
            row = evaluate_loss(self.net, val, self.rt)
            if row:
                result.val_loss = row["loss"]
        every = run.monitor_every
        if monitor is not None and every and (self.pos.epoch + 1) % every == 0 and self.rt.main:
            tic = time.perf_counter()
            result.monitor = monitor(self.model)
            row = {**row, **result.monitor, "monitor_seconds": time.perf_counter() - tic,
                   "epoch_seconds": epoch_seconds}
        return row

    def checkpoint(self, finished: bool = False) -> None:
        """``last.pt`` (rank 0; every rank's RNG states)."""
        rngs = _gather_rng(self.rt)
        if not self.rt.main:
            return
        config = self.config
        save_checkpoint(self.output / CHECKPOINT, {
            "format": CHECKPOINT_FORMAT,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rngs,
            "position": asdict(self.pos),
            "finished": finished,
            "log_accumulator": asdict(self.accumulated),
            "config": {"text": config.text, "source": config.source,
                       "overrides": list(config.overrides), "effective": config.to_dict()},
            "world_size": self.rt.world_size,
            "versions": versions(),
            **self.extra,
        })


def _parallel(model: Trainable, rt: Runtime) -> nn.Module:
    """``model`` under DDP when there are several processes."""
    if not rt.distributed:
        return model
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[rt.local_rank] if rt.device.type == "cuda" else None,
        find_unused_parameters=model.ddp_find_unused_parameters)


def _sync_buffers(model: nn.Module, rt: Runtime) -> None:
    """Rank 0's buffers everywhere: DDP broadcasts them before each forward pass, so after
    the last one each rank holds BatchNorm statistics updated on its own last batch."""
    if rt.distributed:
        for buffer in model.buffers():
            dist.broadcast(buffer, 0)


def evaluate_loss(net: nn.Module, batches: Batches, rt: Runtime) -> dict[str, float]:
    """Mean loss and logs over ``batches`` (epoch 0), in evaluation mode, over all ranks."""
    was_training = net.training
    net.eval()
    sums = Averages()
    n = _global_min(len(batches), rt)
    with torch.no_grad():
        for i, batch in enumerate(batches.epoch(0, 0)):
            if i >= n:
                break
            batch = _to_device(batch, rt.device)
            with rt.autocast_context():
                loss, logs = net(batch)
            sums.add({"loss": float(loss), **logs}, len(batch["mask"]))
    net.train(was_training)
    return sums.all_reduce(rt).means()


def _config_copy(config: Config) -> str:
    """The config file as given, with the command-line overrides noted on top."""
    lines = [f"# config: {config.source}"]
    lines += [f"# override: {o}" for o in config.overrides]
    return "\n".join(lines) + "\n" + config.text


class _Bar:
    """click's progress bar, or nothing (other ranks, --quiet)."""

    def __init__(self, bar: Any | None, done: int = 0):
        self.bar, self.done = bar, done
        self.status = ""

    def __enter__(self) -> _Bar:
        if self.bar is not None:
            self.bar.__enter__()
            if self.done:
                self.bar.update(self.done)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def update(self, n: int, status: str) -> None:
        if self.bar is not None:
            self.status = status
            self.bar.update(n)


def _progress(pos: Position, length: int, epochs: int, enabled: bool) -> _Bar:
    if not enabled:
        return _Bar(None)
    holder = _Bar(None, pos.batch)
    holder.bar = click.progressbar(length=length, label=f"epoch {pos.epoch + 1}/{epochs}",
                                   file=sys.stderr, show_pos=True,
                                   item_show_func=lambda _: holder.status)
    return holder


def _epoch_line(done: int, epochs: int, r: FitResult) -> str:
    parts = [f"epoch {done}/{epochs}"]
    if r.train_loss is not None:
        parts.append(f"train loss {r.train_loss:.4g}")
    if r.val_loss is not None:
        parts.append(f"val loss {r.val_loss:.4g}")
    parts += [f"{name} {value:.3g}" for name, value in r.monitor.items()]
    if r.jets_per_s is not None:
        parts.append(f"{r.jets_per_s:.0f} jets/s")
    return ", ".join(parts)

"""What the training loop trains: :class:`Trainable`, an ``nn.Module`` with hooks.

The loop (:func:`resim.train.loop.fit`) knows nothing of jets or objectives. It calls

    loss, logs = model(batch)        # batch: dict of tensors; logs: dict[str, float]

and the hooks below, whose defaults do nothing special: a model overrides the ones it
needs. Every self-supervised :class:`~resim.train.methods.Method` is a Trainable, and so
is the fine-tuning :class:`~resim.train.finetune.Classifier`.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn


class Trainable(nn.Module):
    """An ``nn.Module`` whose ``forward(batch)`` returns ``(loss, logs)``, with the hooks
    :func:`resim.train.loop.fit` calls."""

    #: Some parameters get no gradient (e.g. an encoder's pooling that an objective never
    #: runs): under DDP the loop then needs ``find_unused_parameters=True``, without which
    #: DDP waits forever for those gradients and fails at the next step.
    ddp_find_unused_parameters: bool = False

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """The loss of one batch, and named numbers worth logging."""
        raise NotImplementedError

    def parameter_groups(self, lr: float) -> list[dict[str, Any]]:
        """The optimiser's parameter groups, each may set its own ``lr`` (e.g. a slower
        pre-trained backbone); by default one group of every trainable parameter, at the
        optimiser's learning rate ``lr``."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def set_total_steps(self, total_steps: int) -> None:
        """Called before training with the run's number of optimiser steps (epochs x steps
        per epoch), for schedules inside the model (JEPA's EMA); nothing by default."""

    def after_step(self) -> None:
        """Called after each optimiser step (e.g. an EMA target update); nothing by
        default."""


__all__ = ["Trainable"]

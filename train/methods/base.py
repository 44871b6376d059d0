"""What a self-supervised method is: an encoder plus whatever a training step needs.

The training loop only ever does::

    loss, logs = method(batch)        # batch: dict of tensors from the loader
    loss.backward(); optimizer.step()
    method.after_step()               # e.g. an EMA target update (JEPA); no-op by default

(and the other hooks of :class:`~resim.train.trainable.Trainable`), so a new objective is
one new file with a ``Method`` subclass and one line in ``resim.train.methods.METHODS``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import Tensor

from ..encoders.base import Encoder
from ..trainable import Trainable


class Method(Trainable, ABC):
    """Base class of the SSL methods. ``self.encoder`` is what fine-tuning keeps.

    Class attributes the training code reads (override them in a subclass; also
    Trainable's ``ddp_find_unused_parameters``, True where the pooling goes untrained):
    """

    #: The objective needs positive pairs, i.e. at least two views of a group per batch
    #: (the training config refuses ``data.views.count = 1`` for it).
    needs_positives: bool = True
    #: Pre-training runs, and so trains, the encoder's jet-level pooling
    #: (``Encoder.pooling_modules``). When it does not, the checkpoint says so and
    #: fine-tuning trains the pooling even with a fixed backbone, instead of keeping its
    #: random initialisation.
    trains_pooling: bool = True

    def __init__(self, encoder: Encoder):
        super().__init__()
        self.encoder = encoder

    def represent(self, batch: dict[str, Tensor]) -> Tensor:
        """The encoder's jet vectors (N, embed_dim) for ``batch``."""
        return self.encoder(batch["x"], batch["v"], batch["mask"])

    @abstractmethod
    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """The loss of one batch, and named numbers worth logging."""

"""RS3L pre-training: SimCLR's NT-Xent on re-simulated views (registry ``rs3l``, ``simclr``).

Harris et al., arXiv 2403.07066: jets re-simulated from the same frozen hard process are
positives, every other jet in the (global) batch a negative. Encoder -> projection head
(-> 64 -> 32 -> 32 -> 8) -> NT-Xent with cosine similarity at temperature 0.1. RS3L trained
with batches of 200 jets (100 pairs) and Adam at 1e-3 (settings of the training loop).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from ..encoders.base import Encoder
from ..heads import projection_head
from ..losses import gather_across_ranks, nt_xent
from .base import Method


class RS3L(Method):
    """Contrastive pre-training with positives = same group id."""

    def __init__(self, encoder: Encoder, temperature: float = 0.1,
                 head_dims: Sequence[int] = (64, 32, 32, 8), head_activation: str = "elu"):
        super().__init__(encoder)
        self.temperature = temperature
        self.head = projection_head(encoder.embed_dim, head_dims, head_activation)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        z = self.head(self.represent(batch))
        z, group = gather_across_ranks(z, batch["group"])
        loss = nt_xent(z, group, self.temperature)
        return loss, {"nt_xent": loss.item()}

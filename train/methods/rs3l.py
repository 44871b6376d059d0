"""RS3L pre-training: SimCLR's NT-Xent on re-simulated views (registry ``rs3l``, ``simclr``).

Harris et al., arXiv 2403.07066: jets re-simulated from the same frozen hard process are
positives, every other jet in the (global) batch a negative. Encoder -> projection head
(-> 64 -> 32 -> 32 -> 8) -> NT-Xent with cosine similarity at temperature 0.1. RS3L trained
with batches of 200 jets (100 pairs) and Adam at 1e-3 (settings of the training loop).

Beyond RS3L: ``var_weight`` and ``cov_weight`` > 0 add VICReg's variance and covariance
terms (Bardes et al., arXiv 2105.04906: hinge at γ = 1, squared off-diagonal covariances)
on the encoder's jet vectors, against the dimensional collapse a contrastive loss on a
narrow projection can leave in the representation (its effective rank; see
``resim probe``). Both 0 (the default): RS3L's loss alone.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from ..encoders.base import Encoder, require_positive, require_weight, require_widths
from ..heads import projection_head
from ..losses import covariance_term, gather_across_ranks, nt_xent, variance_term
from .base import Method


class RS3L(Method):
    """Contrastive pre-training with positives = same group id."""

    def __init__(self, encoder: Encoder, temperature: float = 0.1,
                 head_dims: Sequence[int] = (64, 32, 32, 8), head_activation: str = "elu",
                 var_weight: float = 0.0, cov_weight: float = 0.0):
        super().__init__(encoder)
        require_positive("temperature", temperature)  # NT-Xent divides by it
        require_widths("head_dims", head_dims)
        require_weight("var_weight", var_weight)
        require_weight("cov_weight", cov_weight)
        self.temperature = temperature
        self.head = projection_head(encoder.embed_dim, head_dims, head_activation)
        self.var_weight, self.cov_weight = var_weight, cov_weight

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        h = self.represent(batch)
        z, group = gather_across_ranks(self.head(h), batch["group"])
        contrastive = nt_xent(z, group, self.temperature)
        logs = {"nt_xent": contrastive.item()}
        loss = contrastive
        if self.var_weight or self.cov_weight:
            h, _ = gather_across_ranks(h, batch["group"])
            variance, covariance = variance_term(h), covariance_term(h)
            loss = loss + self.var_weight * variance + self.cov_weight * covariance
            logs |= {"variance": variance.item(), "covariance": covariance.item()}
        return loss, logs

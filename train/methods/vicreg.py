"""VICReg pre-training (registry ``vicreg``): Bardes, Ponce, LeCun, arXiv 2105.04906.

Encoder -> expander (3 x 8192, BatchNorm + ReLU) -> variance-invariance-covariance loss
with the published weights λ = 25 (invariance), μ = 25 (variance), ν = 1 (covariance),
hinge γ = 1, ε = 1e-4. Positives are the rows of the same group; see ``losses.vicreg``
for how views beyond two are handled. The official code syncs the expander's BatchNorm
across GPUs (``nn.SyncBatchNorm``); that is the training loop's choice.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from ..encoders.base import Encoder, require_positive, require_weight, require_widths
from ..heads import expander
from ..losses import gather_across_ranks, vicreg
from .base import Method


class VICReg(Method):
    """Variance-invariance-covariance regularised pre-training."""

    def __init__(self, encoder: Encoder, expander_dims: Sequence[int] = (8192, 8192, 8192),
                 sim_weight: float = 25.0, var_weight: float = 25.0, cov_weight: float = 1.0,
                 gamma: float = 1.0, eps: float = 1e-4):
        super().__init__(encoder)
        for key, weight in (("sim_weight", sim_weight), ("var_weight", var_weight),
                            ("cov_weight", cov_weight)):
            require_weight(key, weight)
        require_positive("gamma", gamma)
        require_positive("eps", eps)
        require_widths("expander_dims", expander_dims)
        self.expander = expander(encoder.embed_dim, expander_dims)
        self.weights = {"sim_weight": sim_weight, "var_weight": var_weight,
                        "cov_weight": cov_weight, "gamma": gamma, "eps": eps}

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        z = self.expander(self.represent(batch))
        z, group = gather_across_ranks(z, batch["group"])
        terms = vicreg(z, group, **self.weights)
        return terms.total, {name: value.item() for name, value in terms._asdict().items()}

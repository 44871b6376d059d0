"""Small networks on top of a jet encoder: SSL projection heads and fine-tuning classifiers.

* ``projection_head``: RS3L's head, embed_dim -> 64 -> 32 -> 32 -> 8 with ELU between layers
  (latent size 8 as in RS3L; 128 and 512 were also tried there).
* ``expander``: VICReg's expander (Bardes, Ponce, LeCun, arXiv 2105.04906): three linear
  layers of 8192, BatchNorm + ReLU between them.
* ``linear_classifier`` / ``mlp_classifier``: heads for fine-tuning and linear probes.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from .encoders.base import make_activation


def mlp(in_dim: int, dims: Sequence[int], activation: str = "relu", batchnorm: bool = False,
        dropout: float = 0.0) -> nn.Sequential:
    """Linear layers of widths ``dims``; (BatchNorm,) activation (, dropout) between them.

    The last layer is linear, with nothing after it.
    """
    if not dims:
        raise ValueError("an MLP head needs at least one layer width")
    layers: list[nn.Module] = []
    width = in_dim
    for i, out in enumerate(dims):
        layers.append(nn.Linear(width, out))
        if i < len(dims) - 1:
            if batchnorm:
                layers.append(nn.BatchNorm1d(out))
            layers.append(make_activation(activation))
            if dropout:
                layers.append(nn.Dropout(dropout))
        width = out
    return nn.Sequential(*layers)


def projection_head(in_dim: int, dims: Sequence[int] = (64, 32, 32, 8),
                    activation: str = "elu") -> nn.Sequential:
    """RS3L's projection head onto the contrastive latent space (default size 8)."""
    return mlp(in_dim, dims, activation)


def expander(in_dim: int, dims: Sequence[int] = (8192, 8192, 8192)) -> nn.Sequential:
    """VICReg's expander: Linear-BatchNorm-ReLU blocks and a final Linear."""
    return mlp(in_dim, dims, "relu", batchnorm=True)


def linear_classifier(in_dim: int, n_classes: int) -> nn.Linear:
    """A linear probe: logits = W h + b."""
    return nn.Linear(in_dim, n_classes)


def mlp_classifier(in_dim: int, n_classes: int, hidden: Sequence[int] = (128,),
                   activation: str = "relu", dropout: float = 0.1) -> nn.Sequential:
    """A classifier with hidden layers ``hidden`` (by default ReLU and dropout 0.1 between)."""
    return mlp(in_dim, (*hidden, n_classes), activation, dropout=dropout)

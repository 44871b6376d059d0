"""ParticleNet-style dynamic graph network, the backbone of RS3L.

Follows ParticleNet (Qu, Gouskos, arXiv 1902.08570) as adapted by RS3L (Harris et al.,
arXiv 2403.07066): an MLP embedding of the particle features, three dynamic EdgeConv blocks
with k = 24 nearest neighbours, ELU activations, hidden size 128, and a sum over particles
as the jet vector (128 numbers).

EdgeConv (Wang et al., DGCNN, arXiv 1801.07829) as in ParticleNet: for particle i with
neighbours j, the edge feature (h_i, h_j - h_i) goes through three (Linear, BatchNorm, act)
layers, is averaged over the neighbours, and added to a (Linear, BatchNorm) shortcut of h_i.
The first block finds neighbours in (Δη, Δφ) = x[..., :2]; later blocks in the previous
block's feature space ("dynamic" graph).

All per-particle and per-edge layers run on real particles / real edges only, so BatchNorm
statistics and averages never see padding. A jet with fewer than k + 1 particles averages
over the neighbours it has.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn
from torch.nn import functional

from .base import Encoder, SettingError, make_activation, require_count, require_widths
from .padding import flat_index, to_flat, to_padded, trim


def knn(points: Tensor, mask: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` nearest other real particles of each particle in ``points`` (N, P, D).

    Returns neighbour indices (N, P, k') with k' = min(k, P - 1) and a bool (N, P, k') marking
    neighbours that exist (the centre is real and there were enough real particles).
    """
    p = points.shape[1]
    k = min(k, p - 1)
    with torch.no_grad():
        squared = (points * points).sum(-1)
        dist = squared.unsqueeze(2) + squared.unsqueeze(1) - 2 * points @ points.transpose(1, 2)
        dist = dist.masked_fill(~mask.unsqueeze(1), float("inf"))
        dist.diagonal(dim1=1, dim2=2).fill_(float("inf"))
        nearest, index = dist.topk(k, dim=-1, largest=False)
        exists = torch.isfinite(nearest) & mask.unsqueeze(-1)
    return index, exists


class EdgeConv(nn.Module):
    """One EdgeConv block on the flat real particles (see module docstring)."""

    def __init__(self, in_dim: int, dims: tuple[int, ...], k: int, act: str):
        super().__init__()
        self.k = k
        self.first = nn.Linear(2 * in_dim, dims[0], bias=False)
        layers: list[nn.Module] = [nn.BatchNorm1d(dims[0]), make_activation(act)]
        for width, out in itertools.pairwise(dims):
            layers += [nn.Linear(width, out, bias=False), nn.BatchNorm1d(out),
                       make_activation(act)]
        self.edge_mlp = nn.Sequential(*layers)
        self.shortcut = (nn.Sequential(nn.Linear(in_dim, dims[-1], bias=False),
                                       nn.BatchNorm1d(dims[-1]))
                         if in_dim != dims[-1] else nn.Identity())
        self.act = make_activation(act)

    def forward(self, h: Tensor, points: Tensor, mask: Tensor, index: Tensor) -> Tensor:
        """New features (M, C') of the M real particles ``h`` (M, C); neighbours found in
        ``points`` (N, P, D); ``index`` maps flat rows to positions in ``mask.flatten()``."""
        n, p = mask.shape
        neighbours, exists = knn(points, mask, self.k)
        row_of = torch.full((n * p,), -1, dtype=torch.long, device=h.device)
        row_of[index] = torch.arange(len(index), device=h.device)
        jet, centre, slot = exists.nonzero(as_tuple=True)
        centre_row = row_of[jet * p + centre]
        neighbour_row = row_of[jet * p + neighbours[jet, centre, slot]]

        # W (h_i, h_j - h_i) = (W_i - W_d) h_i + W_d h_j: apply the first layer per particle
        # and gather, instead of building (h_i, h_j - h_i) for every edge.
        w_centre, w_diff = self.first.weight.split(h.shape[1], dim=1)
        edges = (functional.linear(h, w_centre - w_diff)[centre_row]
                 + functional.linear(h, w_diff)[neighbour_row])
        edges = self.edge_mlp(edges)

        summed = edges.new_zeros(len(h), edges.shape[1]).index_add_(0, centre_row, edges)
        counts = exists.sum(-1).flatten()[index].clamp(min=1).unsqueeze(1)
        return self.act(summed / counts + self.shortcut(h))


class ParticleNet(Encoder):
    """RS3L's ParticleNet-style encoder; see the module docstring for the settings."""

    def __init__(
        self,
        n_features: int,
        embed_dims: tuple[int, ...] = (128,),
        edge_dims: tuple[tuple[int, ...], ...] = ((128, 128, 128),) * 3,
        k: int = 24,
        activation: str = "elu",
        coordinates: int = 2,
    ):
        super().__init__()
        if embed_dims:
            require_widths("embed_dims", embed_dims)
        if not edge_dims:
            raise SettingError("edge_dims", "must list at least one EdgeConv block's widths")
        for dims in edge_dims:
            require_widths("edge_dims", dims)
        require_count("k", k)
        if not 1 <= coordinates <= n_features:
            raise SettingError("coordinates", f"must be between 1 and the {n_features} input "
                                              f"features, got {coordinates}")
        self.n_features = n_features
        self.coordinates = coordinates
        layers: list[nn.Module] = [nn.BatchNorm1d(n_features)]
        width = n_features
        for out in embed_dims:
            layers += [nn.Linear(width, out, bias=False), nn.BatchNorm1d(out),
                       make_activation(activation)]
            width = out
        self.embedding = nn.Sequential(*layers)
        self.convs = nn.ModuleList()
        for dims in edge_dims:
            self.convs.append(EdgeConv(width, tuple(dims), k, activation))
            width = dims[-1]
        self.embed_dim = width

    def forward(self, x: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        mask, x = trim(mask, x)
        index = flat_index(mask)
        h = self.embedding(to_flat(x, index))
        points = x[..., : self.coordinates]
        for i, conv in enumerate(self.convs):
            if i > 0:
                points = to_padded(h.detach(), index, mask.shape)
            h = conv(h, points, mask, index)
        jet = index // mask.shape[1]
        return h.new_zeros(mask.shape[0], h.shape[1]).index_add_(0, jet, h)


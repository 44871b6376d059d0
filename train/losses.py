"""Self-supervised losses on a batch of embeddings ``z`` (N, D) with group ids ``group`` (N,).

Rows with equal group id are realizations of the same frozen hard process: the positives.
The loss functions take any number of views per group in any row order; under DDP call
``gather_across_ranks`` first, so every rank sees the global batch (more negatives for
NT-Xent, better statistics for VICReg's variance and covariance).
"""

from __future__ import annotations

from typing import NamedTuple, cast

import torch
import torch.distributed as dist
from torch import Tensor
from torch.nn import functional


def gather_across_ranks(z: Tensor, group: Tensor) -> tuple[Tensor, Tensor]:
    """All ranks' ``z`` and ``group`` concatenated in rank order; identity without DDP.

    ``z`` is gathered with ``all_gather_single`` of ``torch.distributed._functional_collectives``
    (torch's replacement for the deprecated ``torch.distributed.nn.functional.all_gather``),
    which keeps the graph: its backward pass is a sum reduce-scatter, so each rank, having
    computed the loss on the whole gathered batch, receives the sum of the world-size
    identical gradients of its own rows, and DDP's gradient averaging divides that sum back
    out. Ranks may hold different numbers of rows (e.g. a last, short batch).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return z, group
    from torch.distributed._functional_collectives import all_gather_single

    world = dist.get_world_size()
    size = torch.tensor([len(z)], device=z.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    sizes_list = [int(s) for s in sizes]
    longest = max(sizes_list)
    # all_gather needs equal shapes: pad to the longest batch and cut the padding off again.
    z_padded = torch.cat([z, z.new_zeros(longest - len(z), *z.shape[1:])])
    g_padded = torch.cat([group, group.new_zeros(longest - len(group))])
    world_group = cast(dist.ProcessGroup, dist.group.WORLD)  # initialised: checked above
    zs = all_gather_single(z_padded.contiguous(), 0, world_group).chunk(world)
    gs = [torch.empty_like(g_padded) for _ in range(world)]
    dist.all_gather(gs, g_padded)
    return (torch.cat([t[:n] for t, n in zip(zs, sizes_list, strict=True)]),
            torch.cat([t[:n] for t, n in zip(gs, sizes_list, strict=True)]))


def nt_xent(z: Tensor, group: Tensor, temperature: float = 0.1) -> Tensor:
    """NT-Xent (SimCLR, arXiv 2002.05709; RS3L) with cosine similarity, any number of views.

    For an anchor row i with positives P(i) (other rows of its group) and s_ij the cosine
    similarity divided by ``temperature``::

        l_i = -1/|P(i)| Σ_{p ∈ P(i)} log( exp(s_ip) / Σ_{a ≠ i} exp(s_ia) )

    and the loss is the mean of l_i over anchors that have a positive. With two views per
    group this is exactly SimCLR's loss; with more it is the "outside" multi-positive form of
    SupCon (Khosla et al., arXiv 2004.11362). Rows whose group has no other row in the
    batch are not anchors but still serve as negatives for the others. A batch without any
    positive pair gives 0 (still connected to the graph, so backward works on every rank).
    """
    z = functional.normalize(z, dim=1)
    logits = z @ z.T / temperature
    self_pair = torch.eye(len(z), dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_pair, float("-inf"))
    log_prob = logits - logits.logsumexp(dim=1, keepdim=True)
    positive = (group.unsqueeze(0) == group.unsqueeze(1)) & ~self_pair
    n_positive = positive.sum(dim=1)
    anchor = n_positive > 0
    if not anchor.any():
        return z.sum() * 0.0
    per_anchor = log_prob.masked_fill(~positive, 0.0).sum(dim=1)[anchor] / n_positive[anchor]
    return -per_anchor.mean()


def off_diagonal(matrix: Tensor) -> Tensor:
    """The off-diagonal entries of a square matrix, as a (d - 1, d) view without copying."""
    d = len(matrix)
    # In row-major order the diagonal recurs every d + 1 entries; drop the first of each run.
    return matrix.flatten()[:-1].view(d - 1, d + 1)[:, 1:]


def variance_term(z: Tensor, gamma: float = 1.0, eps: float = 1e-4) -> Tensor:
    """VICReg's variance hinge: mean over dimensions of max(0, gamma - sqrt(Var(z_d) + eps))."""
    return functional.relu(gamma - torch.sqrt(z.var(dim=0) + eps)).mean()


def covariance_term(z: Tensor) -> Tensor:
    """VICReg's covariance term: squared off-diagonal covariances of ``z`` (N, D), summed,
    over D."""
    centred = z - z.mean(dim=0)
    cov = centred.T @ centred / (len(z) - 1)
    return off_diagonal(cov).pow(2).sum() / z.shape[1]


class VICRegTerms(NamedTuple):
    """VICReg's weighted total and its three unweighted terms."""

    total: Tensor
    invariance: Tensor
    variance: Tensor
    covariance: Tensor


def vicreg(z: Tensor, group: Tensor, sim_weight: float = 25.0, var_weight: float = 25.0,
           cov_weight: float = 1.0, gamma: float = 1.0, eps: float = 1e-4) -> VICRegTerms:
    """VICReg (Bardes, Ponce, LeCun, arXiv 2105.04906) for any number of views per group.

    * invariance: mean over all positive pairs (i < j, same group) of |z_i - z_j|² / D;
      for two views in two aligned batches this is the paper's ``mse_loss(Z, Z')``;
    * variance: mean over dimensions of max(0, gamma - sqrt(Var(z_d) + eps));
    * covariance: sum of squared off-diagonal covariances / D.

    Variance and covariance are taken over all N rows together, because views have no
    natural order (the paper sums them over its two branches Z and Z'; pooling the branches
    keeps the variance term of the official code, which averages the two, and halves its
    covariance term). Defaults are the published weights λ = μ = 25, ν = 1, γ = 1,
    ε = 1e-4. Singleton groups enter variance and covariance only. Needs N >= 2.
    """
    n, d = z.shape
    if n < 2:
        raise ValueError(f"VICReg needs at least 2 rows to estimate variances, got {n}")
    _, inverse, counts = torch.unique(group, return_inverse=True, return_counts=True)
    means = z.new_zeros(len(counts), d).index_add_(0, inverse, z) / counts.unsqueeze(1)
    # Σ_{i<j in g} |z_i - z_j|² = n_g Σ_{i in g} |z_i - mean_g|²: exact, and without the
    # cancellation of the expanded form when views are nearly equal.
    spread = ((z - means[inverse]) ** 2).sum(dim=1)
    n_pairs = (counts * (counts - 1) // 2).sum()
    invariance = (counts[inverse] * spread).sum() / (n_pairs.clamp(min=1) * d)

    variance = variance_term(z, gamma, eps)
    covariance = covariance_term(z)
    total = sim_weight * invariance + var_weight * variance + cov_weight * covariance
    return VICRegTerms(total, invariance, variance, covariance)

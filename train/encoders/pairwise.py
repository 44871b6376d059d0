"""Particle-pair interaction features and their embedding into attention biases (ParT).

Particle Transformer (Qu, Li, Qian, arXiv 2202.03772, eq. 3) describes each pair of
particles a, b by four Lorentz-invariant-inspired quantities,

    ΔR = sqrt(Δy² + Δφ²),  kT = min(pT_a, pT_b) ΔR,  z = min(pT_a, pT_b) / (pT_a + pT_b),
    m² = (E_a + E_b)² - |p_a + p_b|²,

and feeds their logarithms through a pointwise MLP (64, 64, 64, one output per head) whose
outputs are added to the attention logits. The features are symmetric in a <-> b, so only
the lower triangle of real pairs is computed and mirrored.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .base import make_activation

EPS = 1e-8
N_PAIR_FEATURES = 4


def rapidity_phi_pt(v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Rapidity, azimuth and transverse momentum of 4-vectors ``v[..., :] = (px, py, pz, E)``.

    Zero 4-vectors (padding) give (0, 0, 0) instead of NaN.
    """
    px, py, pz, e = v.unbind(-1)
    pt = torch.hypot(px, py)
    y = 0.5 * torch.log((e + pz).clamp(min=EPS) / (e - pz).clamp(min=EPS))
    return y, torch.atan2(py, px), pt


def pair_features(va: Tensor, vb: Tensor) -> Tensor:
    """ParT pair features ``(ln kT, ln z, ln ΔR, ln m²)`` of 4-vectors ``va``, ``vb`` (..., 4).

    Every argument of a logarithm is clamped at 1e-8 (as in the reference implementation),
    so collinear, identical, massless or zero (padded) particles give finite values.
    Evaluated in float64: m² of a collinear pair is a small difference of large numbers.
    """
    dtype = va.dtype
    va, vb = va.double(), vb.double()
    ya, phia, pta = rapidity_phi_pt(va)
    yb, phib, ptb = rapidity_phi_pt(vb)
    dphi = torch.remainder(phia - phib + math.pi, 2 * math.pi) - math.pi
    delta = torch.hypot(ya - yb, dphi)
    ptmin = torch.minimum(pta, ptb)
    total = va + vb
    m2 = total[..., 3] ** 2 - (total[..., :3] ** 2).sum(-1)
    features = torch.stack([
        ptmin * delta,
        ptmin / (pta + ptb).clamp(min=EPS),
        delta,
        m2,
    ], dim=-1)
    return features.clamp(min=EPS).log().to(dtype)


def real_pairs(mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(jet, a, b) indices of all pairs a >= b of real particles, self-pairs included."""
    both = mask.unsqueeze(2) & mask.unsqueeze(1)
    jet, a, b = torch.tril(both).nonzero(as_tuple=True)
    return jet, a, b


class PairEmbedding(nn.Module):
    """ParT's interaction embedding: pair features -> one attention bias per head.

    Layout as in ParT: BatchNorm on the 4 inputs, then (Linear, BatchNorm, GELU) per width
    in ``(*dims, n_heads)`` with the last GELU dropped ("pre-activation" biases).
    BatchNorm statistics are taken over real pairs only.
    """

    def __init__(self, n_heads: int, dims: tuple[int, ...] = (64, 64, 64),
                 act: str = "gelu"):
        super().__init__()
        self.n_heads = n_heads
        layers: list[nn.Module] = [nn.BatchNorm1d(N_PAIR_FEATURES)]
        width = N_PAIR_FEATURES
        for out in (*dims, n_heads):
            layers += [nn.Linear(width, out), nn.BatchNorm1d(out), make_activation(act)]
            width = out
        self.mlp = nn.Sequential(*layers[:-1])

    def forward(self, v: Tensor, mask: Tensor) -> Tensor:
        """Attention bias (N, n_heads, P, P) from 4-vectors ``v`` (N, P, 4); 0 on padded pairs."""
        n, p = mask.shape
        jet, a, b = real_pairs(mask)
        with torch.no_grad():
            features = pair_features(v[jet, a], v[jet, b])
        embedded = self.mlp(features)
        bias = embedded.new_zeros(n, self.n_heads, p, p)
        bias[jet, :, a, b] = embedded
        bias[jet, :, b, a] = embedded
        return bias

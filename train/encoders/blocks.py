"""Transformer blocks of Particle Transformer (arXiv 2202.03772, Fig. 4).

Both block kinds share one layout, NormFormer-style (Shleifer et al., arXiv 2110.09456) as
ParT uses it:

    h = x + Dropout(LN(MHA(LN(x), bias)))                   attention half
    y = λ ⊙ h + Dropout(W2 LN(Dropout(GELU(W1 LN(h)))))      feed-forward half

with softmax(q·k/√d + bias) inside MHA, NormFormer's per-head output scale, and a learned
per-channel residual scale λ (both initialised to 1), as in ParT's reference code.

* particle attention: queries, keys and values are all particles; the attention bias is
  ParT's pair embedding U (N, heads, P, P) plus -inf-like entries for padded keys;
* class attention (CaiT, arXiv 2103.17239): the query is a class token, keys and values are
  the class token and all particles; no dropout.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional


class Attention(nn.Module):
    """Multi-head attention with an additive bias, via ``F.scaled_dot_product_attention``.

    Each head's output is scaled by a learned factor (NormFormer's HeadScale, initialised
    to 1) before the output projection.
    """

    def __init__(self, dim: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"embedding size {dim} is not divisible by num_heads={n_heads}")
        self.n_heads = n_heads
        self.dropout = dropout
        self.in_proj = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)
        self.head_scale = nn.Parameter(torch.ones(n_heads))

    def _heads(self, t: Tensor) -> Tensor:
        n, length, dim = t.shape
        return t.view(n, length, self.n_heads, dim // self.n_heads).transpose(1, 2)

    def forward(self, query: Tensor, context: Tensor, bias: Tensor) -> Tensor:
        """``query`` (N, L, D) attends to ``context`` (N, S, D).

        ``bias`` is added to the attention logits and broadcasts to (N, heads, L, S).
        """
        if query is context:
            q, k, v = self.in_proj(query).chunk(3, dim=-1)
        else:
            w_q, w_kv = self.in_proj.weight.split([query.shape[-1], 2 * query.shape[-1]])
            b_q, b_kv = self.in_proj.bias.split([query.shape[-1], 2 * query.shape[-1]])
            q = functional.linear(query, w_q, b_q)
            k, v = functional.linear(context, w_kv, b_kv).chunk(2, dim=-1)
        out = functional.scaled_dot_product_attention(
            self._heads(q), self._heads(k), self._heads(v), attn_mask=bias,
            dropout_p=self.dropout if self.training else 0.0,
        )
        n, heads, length, head_dim = out.shape
        out = out.transpose(1, 2).reshape(n, length, heads * head_dim)
        # Scaling each head's output = scaling the projection's input columns: a (D, D)
        # product instead of one over every particle.
        weight = self.out_proj.weight * self.head_scale.repeat_interleave(head_dim)
        return functional.linear(out, weight, self.out_proj.bias)


class Block(nn.Module):
    """One ParT block (particle attention, or class attention when called with ``cls``)."""

    def __init__(self, dim: int, n_heads: int, ffn_ratio: int = 4, dropout: float = 0.1,
                 attn_dropout: float = 0.1, activation_dropout: float = 0.1):
        super().__init__()
        hidden = dim * ffn_ratio
        self.pre_attn_norm = nn.LayerNorm(dim)
        self.attn = Attention(dim, n_heads, attn_dropout)
        self.post_attn_norm = nn.LayerNorm(dim)
        self.pre_fc_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.post_fc_norm = nn.LayerNorm(hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)
        self.act_dropout = nn.Dropout(activation_dropout)
        self.residual_scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor, bias: Tensor, cls: Tensor | None = None) -> Tensor:
        """Particle attention on ``x`` (N, P, D), or class attention of ``cls`` (N, 1, D) on ``x``.

        For class attention ``bias`` covers the keys ``[cls, x]``, i.e. has 1 + P columns.
        """
        if cls is None:
            residual = x
            h = self.pre_attn_norm(x)
            h = self.attn(h, h, bias)
        else:
            residual = cls
            context = self.pre_attn_norm(torch.cat([cls, x], dim=1))
            h = self.attn(context[:, :1], context, bias)
        h = residual + self.dropout(self.post_attn_norm(h))

        out = self.act_dropout(self.act(self.fc1(self.pre_fc_norm(h))))
        out = self.dropout(self.fc2(self.post_fc_norm(out)))
        return out + self.residual_scale * h

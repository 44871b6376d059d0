"""Particle Transformer (ParT) encoder, with or without pair features.

Follows Qu, Li, Qian, "Particle Transformer for Jet Tagging", arXiv 2202.03772, with the
published settings as defaults: per-particle embedding MLP (128, 512, 128), pair embedding
(64, 64, 64), 8 heads, 8 particle-attention blocks, 2 class-attention blocks, feed-forward
ratio 4, dropout 0.1 in particle-attention blocks and 0 in class-attention blocks, weight
initialisation as in the reference code (Xavier-uniform linear layers; attention output and
second feed-forward layer of block l scaled down by sqrt(2 l)). The jet vector is the
layer-normalised class token (128 numbers); ParT's classification layer is not part of the
encoder (see ``resim.train.heads``).

With ``pair_embed_dims=()`` (registry name ``"transformer"``) there is no pair embedding:
the same network as a plain transformer on the particle set, ParT's "plain transformer"
ablation.

The forward pass is split so masked-particle modelling and JEPA can intervene between
steps (e.g. swap embedded particles for a learned mask token)::

    h = enc.embed(x, mask)           # (N, P, D) per-particle embeddings, zero at padding
    h = enc.encode(h, v, mask)       # (N, P, D) after the particle-attention blocks
    jet = enc.pool(h, mask)          # (N, D) class attention + LayerNorm
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import cast

import torch
from torch import Tensor, nn

from .base import Encoder, require_count, require_widths
from .blocks import Attention, Block
from .padding import extent, flat_index, length_buckets, pad_to, to_flat, to_padded, trim
from .pairwise import PairEmbedding


def padding_bias(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """Additive attention bias (N, 1, 1, P): 0 for real keys, the most negative float for padding.

    A finite value rather than -inf keeps a jet without any real particle finite.
    """
    bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return bias.masked_fill(~mask, torch.finfo(dtype).min)[:, None, None, :]


class ParticleTransformer(Encoder):
    """Particle Transformer (arXiv 2202.03772); see the module docstring for settings."""

    pooling_modules = ("cls_token", "cls_blocks", "norm")

    def __init__(
        self,
        n_features: int,
        embed_dims: tuple[int, ...] = (128, 512, 128),
        pair_embed_dims: tuple[int, ...] = (64, 64, 64),
        num_heads: int = 8,
        num_layers: int = 8,
        num_cls_layers: int = 2,
        ffn_ratio: int = 4,
        dropout: float = 0.1,
        attn_dropout: float = 0.1,
        activation_dropout: float = 0.1,
        length_groups: int = 4,
    ):
        super().__init__()
        require_widths("embed_dims", embed_dims)
        if pair_embed_dims:
            require_widths("pair_embed_dims", pair_embed_dims)
        require_count("num_heads", num_heads)
        require_count("num_layers", num_layers, 0)
        require_count("num_cls_layers", num_cls_layers)  # the jet vector is the class token
        require_count("ffn_ratio", ffn_ratio)
        require_count("length_groups", length_groups)
        self.n_features = n_features
        self.embed_dim = dim = embed_dims[-1]
        self.length_groups = length_groups

        # ParT's embedding: BatchNorm on the raw features, then (LayerNorm, Linear, GELU) per
        # width. Run on real particles only, so BatchNorm statistics ignore padding.
        layers: list[nn.Module] = [nn.BatchNorm1d(n_features)]
        width = n_features
        for out in embed_dims:
            layers += [nn.LayerNorm(width), nn.Linear(width, out), nn.GELU()]
            width = out
        self.embedding = nn.Sequential(*layers)

        self.pair_embedding = (PairEmbedding(num_heads, tuple(pair_embed_dims))
                               if pair_embed_dims else None)
        self.blocks = nn.ModuleList(
            Block(dim, num_heads, ffn_ratio, dropout, attn_dropout, activation_dropout)
            for _ in range(num_layers))
        self.cls_blocks = nn.ModuleList(
            Block(dim, num_heads, ffn_ratio, 0.0, 0.0, 0.0) for _ in range(num_cls_layers))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.norm = nn.LayerNorm(dim)
        self._init_weights()

    def _init_weights(self) -> None:
        # The reference code Xavier-initialises the embedding and the blocks (q, k and v as
        # three separate matrices) and leaves the pair embedding at PyTorch's defaults.
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        modules = [m for part in (self.embedding, self.blocks, self.cls_blocks)
                   for m in part.modules()]
        for module in modules:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        for module in modules:
            if isinstance(module, Attention):
                for weight in module.in_proj.weight.chunk(3):
                    nn.init.xavier_uniform_(weight)
        # Deeper blocks start closer to identity, as in the reference code.
        with torch.no_grad():
            for depth, block in enumerate(cast(Iterable[Block], self.blocks), start=1):
                block.attn.out_proj.weight.div_(math.sqrt(2.0 * depth))
                block.fc2.weight.div_(math.sqrt(2.0 * depth))

    # -- the three steps ----------------------------------------------------------------
    def embed(self, x: Tensor, mask: Tensor) -> Tensor:
        """Per-particle embeddings (N, P, D) of features ``x`` (N, P, F); zero at padding."""
        index = flat_index(mask)
        return to_padded(self.embedding(to_flat(x, index)), index, mask.shape)

    def attention_bias(self, v: Tensor, mask: Tensor, dtype: torch.dtype,
                       pair_mask: Tensor | None = None) -> Tensor:
        """Bias added to every particle-attention logit: pair embedding + padding mask.

        Pair features are computed among the particles of ``pair_mask`` only (default
        ``mask``); pairs involving any other particle get no pair bias, so their 4-vectors
        are never read (masked-particle modelling hides particles this way).
        """
        pad = padding_bias(mask, dtype)
        if self.pair_embedding is None:
            return pad
        pairs = mask if pair_mask is None else pair_mask & mask
        return self.pair_embedding(v, pairs).to(dtype) + pad

    def encode(self, h: Tensor, v: Tensor, mask: Tensor,
               pair_mask: Tensor | None = None) -> Tensor:
        """Run the particle-attention blocks on embeddings ``h`` (N, P, D); zero at padding.

        ``pair_mask`` (default ``mask``): the particles whose 4-vectors enter pair features.
        """
        bias = self.attention_bias(v, mask, h.dtype, pair_mask)
        return self._blocks_by_length(h, bias, mask, pool=False)

    def _blocks_by_length(self, h: Tensor, bias: Tensor, mask: Tensor, pool: bool) -> Tensor:
        """The particle-attention blocks (and class attention if ``pool``), run on groups of
        jets of similar length, each cut to its longest jet; outputs in the input order.

        Exact: nothing in the blocks mixes jets (LayerNorm only), and BatchNorm layers,
        which do, ran before on the whole batch.
        """
        outputs, order = [], []
        for rows in length_buckets(mask, self.length_groups):
            length = max(int(extent(mask[rows]).max()), 1)
            m = mask[rows, :length]
            hb = h[rows, :length]
            bb = bias[rows][..., :length, :length]
            for block in self.blocks:
                hb = block(hb, bb)
            hb = hb * m.unsqueeze(-1)
            outputs.append(self.pool(hb, m) if pool else pad_to(hb, h.shape[1]))
            order.append(rows)
        return torch.cat(outputs)[torch.cat(order).argsort()]

    def pool(self, h: Tensor, mask: Tensor) -> Tensor:
        """Jet vectors (N, D): class-attention blocks over the particles, then LayerNorm."""
        keys = torch.cat([mask.new_ones(mask.shape[0], 1), mask], dim=1)
        bias = padding_bias(keys, h.dtype)
        cls = self.cls_token.expand(h.shape[0], -1, -1)
        for block in self.cls_blocks:
            cls = block(h, bias, cls=cls)
        return self.norm(cls.squeeze(1))

    # -- the encoder interface ----------------------------------------------------------
    def particles(self, x: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        """Per-particle outputs (N, P, D) of the particle-attention blocks; zero at padding."""
        length = x.shape[1]
        mask, x, v = trim(mask, x, v)
        return pad_to(self.encode(self.embed(x, mask), v, mask), length)

    def forward(self, x: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        mask, x, v = trim(mask, x, v)
        h = self.embed(x, mask)
        return self._blocks_by_length(h, self.attention_bias(v, mask, h.dtype), mask, pool=True)

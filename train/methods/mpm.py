"""Masked particle modelling (registry ``mpm``), regression variant.

Golling et al., arXiv 2401.13537 (MPM); Leigh et al., arXiv 2409.12589 (MPMv2, "Is
tokenization needed for masked particle modelling?"): hide a fraction of each jet's
constituents and train the encoder, through a small decoder, to recover them from the
rest. MPMv2 found direct regression of the hidden particles' features competitive with
the original token-ID targets; that is what is built here. (The token-ID variant with a
learned quantiser is not implemented.)

One step, for a batch of jets with ``mask`` (N, P):

1. ``sample_mask``: per jet, hide ``round(fraction × n)`` of its n real particles
   (default 0.3, the best fraction in 2409.12589), chosen uniformly; at least one and
   never all, so a jet with a single particle hides none.
2. Encoder input without the hidden particles' information: ``encoder.embed`` sees only
   the visible particles (so even BatchNorm statistics ignore the hidden ones); the
   hidden particles' embeddings become a learned mask token; ParT's pair features are
   computed among visible particles only (``encode(..., pair_mask=visible)``), so hidden
   4-vectors never reach the pair bias either (pairs with a hidden particle get no bias).
3. Identical mask tokens in a permutation-equivariant encoder give identical outputs, and
   a regression decoder would then predict one average particle for all hidden slots of
   a jet. As in MPMv2's reference code, the k-th hidden particle of a jet (in storage
   order, i.e. by decreasing pT for resim data) gets the mask token plus a learned
   ordinal embedding k (``order_tokens`` of them; ``order_tokens=0`` makes all tokens
   identical, as in MPMv1). This reveals only the pT order among the hidden particles.
4. Decoder: a light transformer (``decoder_layers`` ParT blocks of width
   ``decoder_dim``, padding-masked attention over all real particles) or, with
   ``decoder_layers=0``, a per-particle MLP, on the encoder's per-particle outputs.
5. Targets and loss, on hidden particles only: the particle type (the ``is_*`` one-hot of
   ``FEATURES``) by cross-entropy, weighted ``kind_weight``; every other input feature
   (Δη, Δφ, log pT, log E, their ratios to the jet, ΔR, charge, tanh d0, tanh dz) by L1
   (MPMv2's choice; ``regression_loss`` "mse" or "smooth_l1" possible), after
   standardising each target with running statistics (``normalize_targets``) so that no
   feature dominates by its units. With ``kind_classification=False`` all features are
   regressed (needed when the encoder's inputs are not ``FEATURES``).

Works with the ``part`` and ``transformer`` encoders (they expose ``embed``/``encode``);
``particlenet`` has no per-particle interface to hide particles in, and is refused.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional

from ..encoders.base import Encoder, require_count, require_weight
from ..encoders.blocks import Block
from ..encoders.padding import trim
from ..encoders.transformer import ParticleTransformer, padding_bias
from ..features import DETECTOR_FEATURES, FEATURES, N_FEATURES
from ..heads import mlp
from .base import Method

REGRESSION_LOSSES = ("l1", "mse", "smooth_l1")


def require_particle_interface(encoder: Encoder, method: str) -> None:
    """Refuse encoders without ParT's ``embed``/``encode``/``particles`` steps."""
    missing = [name for name in ("embed", "encode", "particles") if not hasattr(encoder, name)]
    if missing:
        raise ValueError(
            f"method {method!r} needs an encoder with per-particle outputs (embed, encode, "
            f"particles: the 'part' and 'transformer' encoders); {type(encoder).__name__} "
            f"has no {', '.join(missing)}")


def mean_pool(h: Tensor, mask: Tensor) -> Tensor:
    """Mean of per-particle outputs ``h`` (N, P, D) over each jet's real particles."""
    mask = mask[:, : h.shape[1]]
    total = (h * mask.unsqueeze(-1)).sum(dim=1)
    return total / mask.sum(dim=1, keepdim=True).clamp(min=1)


def sample_mask(mask: Tensor, fraction: float,
                generator: torch.Generator | None = None) -> Tensor:
    """Hidden particles (N, P): per jet ``round(fraction × n)`` of its n real ones, clamped
    to [1, n - 1] (none for a jet of one particle), uniformly at random."""
    n_real = mask.sum(dim=1)
    n_hidden = torch.floor(fraction * n_real + 0.5).long().clamp(min=1)
    n_hidden = torch.minimum(n_hidden, (n_real - 1).clamp(min=0))
    scores = torch.rand(mask.shape, generator=generator, device=mask.device)
    scores = scores.masked_fill(~mask, 2.0)  # padding sorts after every real particle
    rank = scores.argsort(dim=1).argsort(dim=1)
    return rank < n_hidden.unsqueeze(1)


def masked_regression_loss(prediction: Tensor, target: Tensor, hidden: Tensor,
                           kind: str = "l1") -> Tensor:
    """Mean over hidden particles and features of the element-wise ``kind`` loss.

    ``prediction``, ``target`` (N, P, R); ``hidden`` (N, P) bool. Other positions do not
    count. Without any hidden particle: 0, still attached to the graph.
    """
    if not hidden.any():
        return prediction.sum() * 0.0
    p, t = prediction[hidden], target[hidden]
    if kind == "l1":
        return functional.l1_loss(p, t)
    if kind == "mse":
        return functional.mse_loss(p, t)
    if kind == "smooth_l1":
        return functional.smooth_l1_loss(p, t)
    raise ValueError(f"unknown regression loss {kind!r}; known: {', '.join(REGRESSION_LOSSES)}")


def masked_class_loss(logits: Tensor, classes: Tensor, hidden: Tensor) -> Tensor:
    """Mean cross-entropy over hidden particles: ``logits`` (N, P, K), ``classes`` (N, P)."""
    if not hidden.any():
        return logits.sum() * 0.0
    return functional.cross_entropy(logits[hidden], classes[hidden])


class MPM(Method):
    """Masked particle modelling with a regression (+ particle-type) decoder."""

    #: Pre-training never runs the encoder's class-attention pooling: under DDP those
    #: parameters get no gradient (``find_unused_parameters=True`` needed), and
    #: fine-tuning must train it. Every jet is its own example: no positives needed.
    ddp_find_unused_parameters = True
    trains_pooling = False
    needs_positives = False
    #: An encoder with per-particle steps (require_particle_interface checks it).
    encoder: ParticleTransformer

    def __init__(self, encoder: Encoder, mask_fraction: float = 0.3, order_tokens: int = 128,
                 decoder_dim: int = 128, decoder_layers: int = 2, decoder_heads: int = 8,
                 kind_classification: bool = True, kind_weight: float = 1.0,
                 regression_loss: str = "l1", normalize_targets: bool = True):
        super().__init__(encoder)
        require_particle_interface(encoder, "mpm")
        if not 0.0 < mask_fraction < 1.0:
            raise ValueError(f"mpm: mask_fraction must be in (0, 1), got {mask_fraction}")
        if regression_loss not in REGRESSION_LOSSES:
            raise ValueError(f"mpm: unknown regression_loss {regression_loss!r}; known: "
                             f"{', '.join(REGRESSION_LOSSES)}")
        n_features = encoder.n_features
        if kind_classification and n_features not in (N_FEATURES, len(DETECTOR_FEATURES)):
            raise ValueError(
                f"mpm: kind_classification needs the {N_FEATURES} inputs of "
                f"resim.train.features.FEATURES (or the {len(DETECTOR_FEATURES)} of "
                f"DETECTOR_FEATURES), the encoder takes {n_features}; set "
                f"kind_classification = false to regress all inputs")
        require_weight("kind_weight", kind_weight)
        require_count("decoder_dim", decoder_dim)
        require_count("decoder_layers", decoder_layers, 0)
        require_count("decoder_heads", decoder_heads)
        self.mask_fraction = mask_fraction
        self.regression_loss = regression_loss
        self.kind_weight = kind_weight
        kinds = [i for i, name in enumerate(FEATURES) if name.startswith("is_")]
        self.kind_columns: list[int] = kinds if kind_classification else []
        self.regression_columns = [i for i in range(n_features) if i not in self.kind_columns]

        dim = encoder.embed_dim
        self.mask_token = nn.Parameter(torch.zeros(dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.order_embedding = nn.Embedding(order_tokens, dim) if order_tokens > 0 else None
        if self.order_embedding is not None:
            nn.init.trunc_normal_(self.order_embedding.weight, std=0.02)

        self.decoder_in = nn.Linear(dim, decoder_dim)
        self.decoder = nn.ModuleList(
            Block(decoder_dim, decoder_heads, 4, 0.0, 0.0, 0.0) for _ in range(decoder_layers))
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        outputs = len(self.regression_columns) + len(self.kind_columns)
        self.head = mlp(decoder_dim, (decoder_dim, outputs), "gelu")
        self.target_norm = (nn.BatchNorm1d(len(self.regression_columns), affine=False)
                            if normalize_targets else None)

    # -- the steps, public so tests can hold the hidden set fixed --------------------------
    def sample(self, mask: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return sample_mask(mask, self.mask_fraction, generator)

    def mask_tokens(self, hidden: Tensor) -> Tensor:
        """(N, P, D): the mask token, plus the ordinal embedding of each hidden particle."""
        tokens = self.mask_token.expand(*hidden.shape, -1)
        if self.order_embedding is None:
            return tokens
        order = (hidden.long().cumsum(dim=1) - 1).clamp(0, self.order_embedding.num_embeddings - 1)
        return tokens + self.order_embedding(order)

    def encode_masked(self, x: Tensor, v: Tensor, mask: Tensor, hidden: Tensor) -> Tensor:
        """Encoder outputs (N, P, D) with the ``hidden`` particles replaced by mask tokens.

        Nothing of the hidden particles' ``x`` or ``v`` is read: they are zeroed, left out
        of the embedding (and its BatchNorm) and of the pair features.
        """
        visible = mask & ~hidden
        keep = visible.unsqueeze(-1)
        x, v = x * keep, v * keep
        h = self.encoder.embed(x, visible)
        h = torch.where(hidden.unsqueeze(-1), self.mask_tokens(hidden).to(h.dtype), h)
        return self.encoder.encode(h, v, mask, pair_mask=visible)

    def decode(self, h: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Per-particle (regression (N, P, R), particle-type logits (N, P, K))."""
        d = self.decoder_in(h)
        bias = padding_bias(mask, d.dtype)
        for block in self.decoder:
            d = block(d, bias)
        out = self.head(self.decoder_norm(d))
        return out.split([len(self.regression_columns), len(self.kind_columns)], dim=-1)

    def targets(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Regression targets (N, P, R), standardised if asked, and type indices (N, P)."""
        target = x[..., self.regression_columns]
        if self.target_norm is not None:
            target = torch.zeros_like(target)
            # Statistics of all real particles (running averages in eval mode).
            target[mask] = self.target_norm(x[..., self.regression_columns][mask])
        kind = (x[..., self.kind_columns].argmax(dim=-1) if self.kind_columns
                else mask.new_zeros(mask.shape, dtype=torch.long))
        return target.detach(), kind

    def losses(self, batch: dict[str, Tensor],
               hidden: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """The total loss and its terms; ``hidden`` drawn with ``sample`` unless given."""
        mask, x, v = batch["mask"], batch["x"], batch["v"]
        if hidden is not None:
            mask, x, v, hidden = trim(mask, x, v, hidden)
        else:
            mask, x, v = trim(mask, x, v)
            hidden = self.sample(mask)
        regression, logits = self.decode(self.encode_masked(x, v, mask, hidden), mask)
        target, kind = self.targets(x, mask)
        terms = {"regression": masked_regression_loss(regression, target, hidden,
                                                      self.regression_loss)}
        total = terms["regression"]
        if self.kind_columns:
            terms["kind"] = masked_class_loss(logits, kind, hidden)
            total = total + self.kind_weight * terms["kind"]
            if hidden.any():
                correct = logits[hidden].argmax(-1) == kind[hidden]
                terms["kind_accuracy"] = correct.float().mean()
        terms["hidden_fraction"] = hidden.sum() / mask.sum().clamp(min=1)
        return total, terms

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        loss, terms = self.losses(batch)
        logs = {"mpm": loss.item()} | {name: t.detach().item() for name, t in terms.items()}
        return loss, logs

    def represent(self, batch: dict[str, Tensor]) -> Tensor:
        """Mean of the encoder's per-particle outputs over the whole jet, nothing hidden (its
        class-attention pooling is not trained by MPM)."""
        return mean_pool(self.encoder.particles(batch["x"], batch["v"], batch["mask"]),
                         batch["mask"])

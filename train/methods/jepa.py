"""Joint-embedding predictive pre-training, HEP-JEPA style (registry ``jepa``).

Bardhan et al., arXiv 2502.03933 (HEP-JEPA), after I-JEPA (Assran et al., arXiv
2301.08243): from the embeddings of a *context* part of a jet, predict the embeddings an
EMA *target* encoder gives to the unseen *target* blocks. No augmentations, no negatives;
collapse is avoided by the predictor/EMA asymmetry.

One step, for jets with ``mask`` (N, P):

1. Blocks (``sample_blocks``): ``n_targets`` target blocks per jet, each ``round(fraction
   × n)`` (at least 1) of the jet's n real particles, chosen by ``blocks``:

   * ``"neighbourhood"`` (default): the particles nearest in (Δη, Δφ) = ``x[..., :2]`` to
     a randomly chosen real particle: a local patch of the jet, like HEP-JEPA's
     η–φ patches and I-JEPA's image blocks, at particle granularity;
   * ``"pt"``: a run of consecutive particles in pT order at a random start.

   Blocks may overlap. The context is every real particle in no target block (at least
   one: if the blocks cover a jet, one random particle goes back to the context). Jets
   with fewer than two particles get no targets.
2. Context encoder = the trained encoder, run on the context particles only (targets are
   padding to it: their features, 4-vectors and pairs are never read).
3. Target encoder = an exponential moving average of the context encoder, run on the whole
   jet, without gradients, always in eval mode (no dropout; BatchNorm running statistics
   copied from the context encoder at each update). Targets are its per-particle outputs,
   layer-normalised over features as in I-JEPA.
4. Predictor: a narrow transformer (``predictor_layers`` ParT blocks of width
   ``predictor_dim``) per (jet, target block): the projected context embeddings, and for
   each target particle a learned mask token; every token gets a learned embedding of its
   (Δη, Δφ), the "positional information" telling the predictor where the target sits.
   It attends over the context and that block only; outputs are projected back to the
   encoder width.
5. Loss: smooth L1 (I-JEPA; or ``loss = "mse"``) between predictions and targets on the
   target particles, averaged over blocks.
6. ``after_step()``: target ← m target + (1 - m) online, with m rising from ``ema_start``
   (0.996) to ``ema_end`` (1.0) over ``total_steps`` optimiser steps on a cosine
   (``ema_schedule``; also "linear" as I-JEPA, or "constant"). The step count is a buffer,
   so checkpoints resume the schedule. ``total_steps`` unset (the default): the training
   loop sets it to the run's length, run.epochs x steps per epoch (``set_total_steps``),
   so the momentum reaches ``ema_end`` at the last step; a resumed run with more epochs
   stretches the rest of the schedule, as it does the learning rate's.

Differences from HEP-JEPA: no particle "tokeniser" (patches of particles embedded by a
small network); the encoder's own particles are the tokens, which keeps the encoder
interchangeable with the other methods'. ``self.encoder`` (what fine-tuning keeps) is the
context encoder; I-JEPA evaluates with the target encoder, which is ``target_encoder``.
Needs per-particle outputs: ``part`` or ``transformer``, not ``particlenet``.
"""

from __future__ import annotations

import copy
import math
from typing import TypedDict

import torch
from torch import Tensor, nn
from torch.nn import functional

from ..encoders.base import Encoder, require_count
from ..encoders.blocks import Block
from ..encoders.padding import trim
from ..encoders.pairwise import rapidity_phi_pt
from ..encoders.transformer import ParticleTransformer, padding_bias
from .base import Method
from .mpm import mean_pool, require_particle_interface

BLOCK_SAMPLERS = ("neighbourhood", "pt")
EMA_SCHEDULES = ("cosine", "linear", "constant")
JEPA_LOSSES = ("smooth_l1", "mse")


# -- block sampling ----------------------------------------------------------------------
def block_size(mask: Tensor, fraction: float) -> Tensor:
    """Particles per target block (N,): round(fraction × n), at least 1; 0 if n < 2."""
    n = mask.sum(dim=1)
    k = torch.floor(fraction * n + 0.5).long().clamp(min=1)
    return torch.where(n >= 2, torch.minimum(k, n), torch.zeros_like(k))


def _ranks(values: Tensor) -> Tensor:
    """Rank of every entry along the last axis (0 = smallest)."""
    return values.argsort(dim=-1).argsort(dim=-1)


def neighbourhood_blocks(coords: Tensor, mask: Tensor, n_blocks: int, fraction: float,
                         generator: torch.Generator | None = None) -> Tensor:
    """(N, B, P): per block the ``block_size`` real particles nearest in ``coords`` (N, P, 2)
    to a random real particle of the jet (itself included)."""
    n, p = mask.shape
    scores = torch.rand(n, n_blocks, p, generator=generator, device=mask.device)
    centre = scores.masked_fill(~mask.unsqueeze(1), -1.0).argmax(dim=-1)  # (N, B)
    centre_xy = coords.gather(1, centre.unsqueeze(-1).expand(-1, -1, coords.shape[-1]))
    dist = ((coords.unsqueeze(1) - centre_xy.unsqueeze(2)) ** 2).sum(-1)  # (N, B, P)
    dist = dist.masked_fill(~mask.unsqueeze(1), float("inf"))
    k = block_size(mask, fraction)[:, None, None]
    return (_ranks(dist) < k) & mask.unsqueeze(1)


def pt_blocks(pt: Tensor, mask: Tensor, n_blocks: int, fraction: float,
              generator: torch.Generator | None = None) -> Tensor:
    """(N, B, P): per block ``block_size`` consecutive real particles in decreasing-pT order,
    starting at a uniformly random rank."""
    n = mask.sum(dim=1, keepdim=True)
    rank = _ranks(-pt.masked_fill(~mask, -float("inf"))).unsqueeze(1)  # hardest = 0
    k = block_size(mask, fraction).unsqueeze(1)
    u = torch.rand(mask.shape[0], n_blocks, generator=generator, device=mask.device)
    start = torch.floor(u * (n - k + 1).clamp(min=1)).long()
    inside = (rank >= start.unsqueeze(-1)) & (rank < (start + k).unsqueeze(-1))
    return inside & mask.unsqueeze(1) & (k > 0).unsqueeze(-1)


def sample_blocks(x: Tensor, v: Tensor, mask: Tensor, n_blocks: int, fraction: float,
                  how: str = "neighbourhood",
                  generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """(context (N, P), targets (N, B, P)); the context is never empty for a jet with a
    particle and never overlaps a target block."""
    if how == "neighbourhood":
        targets = neighbourhood_blocks(x[..., :2], mask, n_blocks, fraction, generator)
    elif how == "pt":
        targets = pt_blocks(rapidity_phi_pt(v)[2], mask, n_blocks, fraction, generator)
    else:
        raise ValueError(f"unknown block sampling {how!r}; known: {', '.join(BLOCK_SAMPLERS)}")
    context = mask & ~targets.any(dim=1)
    # Blocks covering a whole jet: hand one random particle back to the context.
    empty = mask.any(dim=1) & ~context.any(dim=1)
    scores = torch.rand(mask.shape, generator=generator, device=mask.device)
    back = torch.zeros_like(mask)
    back[torch.arange(len(mask), device=mask.device),
         scores.masked_fill(~mask, -1.0).argmax(dim=1)] = True
    back &= empty.unsqueeze(1)
    return context | back, targets & ~back.unsqueeze(1)


# -- EMA -------------------------------------------------------------------------------------
def ema_momentum(step: int, total_steps: int, start: float = 0.996, end: float = 1.0,
                 schedule: str = "cosine") -> float:
    """EMA momentum after ``step`` of ``total_steps`` steps: ``start`` -> ``end``.

    cosine (BYOL, arXiv 2006.07733): end - (end - start)(1 + cos(π t)) / 2;
    linear (I-JEPA): start + (end - start) t; constant: start. t = step / total, ≤ 1.
    """
    t = min(step / max(total_steps, 1), 1.0)
    if schedule == "cosine":
        return end - (end - start) * (1 + math.cos(math.pi * t)) / 2
    if schedule == "linear":
        return start + (end - start) * t
    if schedule == "constant":
        return start
    raise ValueError(f"unknown EMA schedule {schedule!r}; known: {', '.join(EMA_SCHEDULES)}")


def ema_init_share(total_steps: int, start: float = 0.996, end: float = 1.0,
                   schedule: str = "cosine") -> float:
    """The weight the target encoder still gives its random initial weights after a run of
    ``total_steps`` EMA updates: the product of the momenta (without the online encoder's
    own drift). I-JEPA's 0.996 -> 1.0 leaves 64 % after 220 steps, 1.8 % after 2000 and
    nothing after the ~10^5 steps of a full-scale run."""
    share = 1.0
    for step in range(total_steps):
        share *= ema_momentum(step, total_steps, start, end, schedule)
    return share


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """target ← momentum × target + (1 - momentum) × online, parameter by parameter;
    buffers (BatchNorm statistics) copied from ``online``."""
    for t, o in zip(target.parameters(), online.parameters(), strict=True):
        t.mul_(momentum).add_(o.detach(), alpha=1.0 - momentum)
    for buffer, source in zip(target.buffers(), online.buffers(), strict=True):
        buffer.copy_(source)


def jepa_loss(prediction: Tensor, target: Tensor, select: Tensor,
              kind: str = "smooth_l1") -> Tensor:
    """Mean over selected (row, particle) entries and features of smooth-L1 or squared error.

    ``prediction``, ``target`` (R, P, D); ``select`` (R, P) bool. Nothing selected: 0.
    """
    if not select.any():
        return prediction.sum() * 0.0
    p, t = prediction[select], target[select]
    if kind == "smooth_l1":
        return functional.smooth_l1_loss(p, t)
    if kind == "mse":
        return functional.mse_loss(p, t)
    raise ValueError(f"unknown JEPA loss {kind!r}; known: {', '.join(JEPA_LOSSES)}")


class _EMA(TypedDict):
    start: float
    end: float
    schedule: str


class JEPA(Method):
    """Context encoder + EMA target encoder + predictor of target-block embeddings."""

    #: Pre-training never runs the encoder's class-attention pooling: under DDP those
    #: parameters get no gradient (``find_unused_parameters=True`` needed), and
    #: fine-tuning must train it. Every jet is its own example: no positives needed.
    ddp_find_unused_parameters = True
    trains_pooling = False
    needs_positives = False
    #: Encoders with per-particle steps (require_particle_interface checks them).
    encoder: ParticleTransformer
    target_encoder: ParticleTransformer
    #: Optimiser steps taken (a buffer: it is in the checkpoint).
    step: Tensor

    def __init__(self, encoder: Encoder, n_targets: int = 4, target_fraction: float = 0.15,
                 blocks: str = "neighbourhood", predictor_dim: int = 64,
                 predictor_layers: int = 4, predictor_heads: int = 4,
                 ema_start: float = 0.996, ema_end: float = 1.0, ema_schedule: str = "cosine",
                 total_steps: int | None = None, loss: str = "smooth_l1"):
        super().__init__(encoder)
        require_particle_interface(encoder, "jepa")
        if blocks not in BLOCK_SAMPLERS:
            raise ValueError(f"jepa: unknown blocks {blocks!r}; known: "
                             f"{', '.join(BLOCK_SAMPLERS)}")
        if ema_schedule not in EMA_SCHEDULES:
            raise ValueError(f"jepa: unknown ema_schedule {ema_schedule!r}; known: "
                             f"{', '.join(EMA_SCHEDULES)}")
        if loss not in JEPA_LOSSES:
            raise ValueError(f"jepa: unknown loss {loss!r}; known: {', '.join(JEPA_LOSSES)}")
        if n_targets < 1 or not 0.0 < target_fraction < 1.0:
            raise ValueError(f"jepa: need n_targets >= 1 and 0 < target_fraction < 1, got "
                             f"{n_targets}, {target_fraction}")
        if not 0.0 <= ema_start <= ema_end <= 1.0:
            raise ValueError(f"jepa: need 0 <= ema_start <= ema_end <= 1, got {ema_start}, "
                             f"{ema_end}")
        if total_steps is not None and (isinstance(total_steps, bool) or
                                        not isinstance(total_steps, int) or total_steps < 1):
            raise ValueError(f"jepa: total_steps must be >= 1 (an integer; or unset: the "
                             f"training run's length), got {total_steps!r}")
        require_count("predictor_dim", predictor_dim)
        require_count("predictor_layers", predictor_layers)  # none: blind to the context
        require_count("predictor_heads", predictor_heads)
        self.n_targets, self.target_fraction, self.blocks = n_targets, target_fraction, blocks
        self.ema: _EMA = {"start": ema_start, "end": ema_end, "schedule": ema_schedule}
        self.total_steps = total_steps
        self.fixed_total_steps = total_steps is not None  # given: the loop keeps it
        self.loss_kind = loss

        self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False).eval()
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

        dim = encoder.embed_dim
        self.predictor_in = nn.Linear(dim, predictor_dim)
        self.position = nn.Sequential(nn.Linear(2, predictor_dim), nn.GELU(),
                                      nn.Linear(predictor_dim, predictor_dim))
        self.mask_token = nn.Parameter(torch.zeros(predictor_dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.predictor = nn.ModuleList(
            Block(predictor_dim, predictor_heads, 4, 0.0, 0.0, 0.0)
            for _ in range(predictor_layers))
        self.predictor_norm = nn.LayerNorm(predictor_dim)
        self.predictor_out = nn.Linear(predictor_dim, dim)

    def train(self, mode: bool = True) -> JEPA:
        super().train(mode)
        self.target_encoder.eval()  # targets without dropout, whatever the mode
        return self

    # -- pieces ----------------------------------------------------------------------------
    def set_total_steps(self, total_steps: int) -> None:
        """The run's length in optimiser steps (from the training loop), unless
        ``total_steps`` was given."""
        if not self.fixed_total_steps:
            self.total_steps = int(total_steps)

    def momentum(self) -> float:
        step = int(self.step)
        if self.total_steps is None:
            if step == 0:  # the start value, whatever the schedule's length
                return ema_momentum(0, 1, self.ema["start"], self.ema["end"],
                                    self.ema["schedule"])
            raise RuntimeError("jepa: the EMA schedule's length is unknown: give total_steps, "
                               "or call set_total_steps (resim's training loop does)")
        return ema_momentum(step, self.total_steps, self.ema["start"], self.ema["end"],
                            self.ema["schedule"])

    def after_step(self) -> None:
        """Move the target encoder towards the context encoder; advance the schedule."""
        ema_update(self.target_encoder, self.encoder, self.momentum())
        self.step += 1

    def sample(self, x: Tensor, v: Tensor, mask: Tensor,
               generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        return sample_blocks(x, v, mask, self.n_targets, self.target_fraction, self.blocks,
                             generator)

    @torch.no_grad()
    def target_embeddings(self, x: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        """Layer-normalised per-particle outputs (N, P, D) of the target encoder."""
        h = self.target_encoder.particles(x, v, mask)
        return functional.layer_norm(h, h.shape[-1:])

    def predict(self, context_h: Tensor, x: Tensor, context: Tensor,
                targets: Tensor) -> Tensor:
        """Predicted embeddings (N·B, P, D) of each block's particles (rows jet-major)."""
        n, b, p = targets.shape
        position = self.position(x[..., :2])
        tokens = self.predictor_in(context_h) + position  # (N, P, d)
        queries = self.mask_token + position
        rows_target = targets.reshape(n * b, p)
        h = torch.where(rows_target.unsqueeze(-1), queries.repeat_interleave(b, dim=0),
                        tokens.repeat_interleave(b, dim=0))
        real = context.repeat_interleave(b, dim=0) | rows_target
        bias = padding_bias(real, h.dtype)
        for block in self.predictor:
            h = block(h, bias)
        return self.predictor_out(self.predictor_norm(h))

    def losses(self, batch: dict[str, Tensor], blocks: tuple[Tensor, Tensor] | None = None
               ) -> tuple[Tensor, dict[str, Tensor]]:
        """The loss and logged numbers; ``blocks`` = (context, targets) drawn unless given."""
        mask, x, v = trim(batch["mask"], batch["x"], batch["v"])
        if blocks is None:
            context, targets = self.sample(x, v, mask)
        else:
            context, targets = blocks[0][:, : mask.shape[1]], blocks[1][..., : mask.shape[1]]
        context_h = self.encoder.particles(x, v, context)
        target_h = self.target_embeddings(x, v, mask)
        prediction = self.predict(context_h, x, context, targets)
        b = targets.shape[1]
        loss = jepa_loss(prediction, target_h.repeat_interleave(b, dim=0),
                         targets.reshape(-1, mask.shape[1]), self.loss_kind)
        real = mask.sum().clamp(min=1)
        return loss, {"context_fraction": context.sum() / real,
                      "target_fraction": targets.any(dim=1).sum() / real}

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        loss, terms = self.losses(batch)
        logs = {"jepa": loss.item(), "ema_momentum": self.momentum()}
        return loss, logs | {name: t.item() for name, t in terms.items()}

    def represent(self, batch: dict[str, Tensor]) -> Tensor:
        """Mean of the context encoder's per-particle outputs (its class-attention pooling
        is not trained by JEPA)."""
        return mean_pool(self.encoder.particles(batch["x"], batch["v"], batch["mask"]),
                         batch["mask"])

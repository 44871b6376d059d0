"""HEP-JEPA: block sampling, EMA schedule and update, loss by hand, training behaviour."""

from __future__ import annotations

import math

import pytest
import torch

from resim.train.encoders import build_encoder
from resim.train.methods import METHODS, build_method
from resim.train.methods.jepa import (
    JEPA,
    block_size,
    ema_momentum,
    jepa_loss,
    neighbourhood_blocks,
    pt_blocks,
    sample_blocks,
)

N_FEATURES = 7
SMALL = {
    "part": dict(embed_dims=(16, 16), pair_embed_dims=(8, 8), num_heads=2, num_layers=2,
                 num_cls_layers=1, dropout=0.0, attn_dropout=0.0, activation_dropout=0.0),
    "transformer": dict(embed_dims=(16, 16), num_heads=2, num_layers=2, num_cls_layers=1,
                        dropout=0.0, attn_dropout=0.0, activation_dropout=0.0),
}
PREDICTOR = dict(predictor_dim=16, predictor_heads=2, predictor_layers=1)


pytestmark = pytest.mark.usefixtures("one_thread")


def jet_batch(n: int = 8, p: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random jets of 2..p particles: x[..., :2] = (Δη, Δφ), v massless 4-vectors."""
    gen = torch.Generator().manual_seed(seed)
    counts = torch.randint(2, p + 1, (n,), generator=gen)
    counts[0] = p
    mask = torch.arange(p) < counts.unsqueeze(1)
    deta, dphi = 0.3 * torch.randn(n, p, generator=gen), 0.3 * torch.randn(n, p, generator=gen)
    pt = 1 + 50 * torch.rand(n, p, generator=gen)
    v = torch.stack([pt * dphi.cos(), pt * dphi.sin(), pt * deta.sinh(), pt * deta.cosh()], -1)
    x = torch.randn(n, p, N_FEATURES, generator=gen)
    x[..., 0], x[..., 1] = deta, dphi
    keep = mask.unsqueeze(-1)
    return {"x": x * keep, "v": v * keep, "mask": mask}


def small_jepa(encoder: str = "part", seed: int = 0, **settings) -> JEPA:
    torch.manual_seed(seed)
    enc = build_encoder(encoder, N_FEATURES, **SMALL[encoder])
    return build_method("jepa", enc, **(PREDICTOR | settings))


# -- blocks ----------------------------------------------------------------------------------
def test_block_size_rounds_with_at_least_one_and_none_for_single_particles():
    mask = torch.arange(40) < torch.tensor([0, 1, 2, 5, 10, 40]).unsqueeze(1)
    assert block_size(mask, 0.15).tolist() == [0, 0, 1, 1, 2, 6]


def test_neighbourhood_blocks_are_the_particles_nearest_a_real_one():
    # Particles on a line at 0, 1, ..., 9 (shuffled slots, two padded slots): a block of
    # 3 is 3 consecutive positions.
    positions = torch.tensor([5.0, 2, 9, 0, 7, 1, 8, 3, 6, 4, 0, 0])
    mask = torch.arange(12) < 10
    coords = torch.stack([positions, torch.zeros(12)], -1).unsqueeze(0)
    gen = torch.Generator().manual_seed(0)
    blocks = neighbourhood_blocks(coords, mask.unsqueeze(0), 200, 0.3, gen)[0]
    assert (blocks.sum(-1) == 3).all() and not blocks[:, ~mask].any()
    for block in blocks:
        chosen = sorted(positions[block].tolist())
        assert chosen[2] - chosen[0] == 2, chosen
    # Every particle serves as (part of) a block sometimes: centres are uniform.
    assert blocks.any(0)[mask].all()


def test_pt_blocks_are_consecutive_in_pt_order():
    pt = torch.tensor([[3.0, 50, 7, 20, 1, 9, 0, 0]])
    mask = pt > 0
    rank_of_slot = {1: 0, 3: 1, 5: 2, 2: 3, 0: 4, 4: 5}
    blocks = pt_blocks(pt, mask, 100, 0.5, torch.Generator().manual_seed(0))[0]
    starts = set()
    for block in blocks:
        ranks = sorted(rank_of_slot[i] for i in block.nonzero().flatten().tolist())
        assert ranks == list(range(ranks[0], ranks[0] + 3))
        starts.add(ranks[0])
    assert starts == {0, 1, 2, 3}


@pytest.mark.parametrize("how", ["neighbourhood", "pt"])
def test_context_and_targets_partition_the_jet(how):
    batch = jet_batch(n=50, p=6, seed=1)
    batch["mask"][:5] = False
    batch["mask"][5:10, 1:] = False  # single-particle jets: no targets
    batch["mask"][10:30, 2:] = False  # two particles, four blocks: often all covered
    gen = torch.Generator().manual_seed(2)
    context, targets = sample_blocks(batch["x"], batch["v"], batch["mask"], 4, 0.5, how, gen)
    mask = batch["mask"]
    assert targets.shape == (50, 4, 6)
    assert not (context & targets.any(1)).any()  # disjoint
    assert not (context & ~mask).any() and not (targets & ~mask.unsqueeze(1)).any()
    has = mask.any(1)
    assert context.any(1)[has].all() and not context[~has].any()  # never empty
    assert not targets[5:10].any()
    assert targets[10:].any(-1).any(-1).all()  # every jet with 2+ particles has targets


# -- EMA ---------------------------------------------------------------------------------------
def test_ema_momentum_schedules():
    assert ema_momentum(0, 100) == pytest.approx(0.996)
    assert ema_momentum(50, 100) == pytest.approx(0.998)
    assert ema_momentum(25, 100) == pytest.approx(1 - 0.004 * (1 + math.cos(math.pi / 4)) / 2)
    assert ema_momentum(100, 100) == ema_momentum(500, 100) == 1.0
    assert ema_momentum(25, 100, schedule="linear") == pytest.approx(0.997)
    assert ema_momentum(25, 100, 0.99, schedule="constant") == 0.99
    with pytest.raises(ValueError, match="unknown EMA schedule 'step'"):
        ema_momentum(0, 10, schedule="step")


def test_ema_update_and_no_gradient_into_the_target():
    method = small_jepa(total_steps=10).train()
    assert not method.target_encoder.training  # targets without dropout
    assert all(not p.requires_grad for p in method.target_encoder.parameters())
    optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.1)
    batch = jet_batch()
    loss, _ = method(batch)
    optimizer.zero_grad()
    loss.backward()
    assert all(p.grad is None for p in method.target_encoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.encoder.parameters())
    before = [p.clone() for p in method.target_encoder.parameters()]
    target_ids = {id(p) for p in method.target_encoder.parameters()}
    assert not any(id(p) in target_ids for group in optimizer.param_groups
                   for p in group["params"])
    optimizer.step()
    online = [p.detach().clone() for p in method.encoder.parameters()]
    m = method.momentum()
    assert m == pytest.approx(0.996) and int(method.step) == 0
    method.after_step()
    assert int(method.step) == 1 and method.momentum() > m
    for old, new, o in zip(before, method.target_encoder.parameters(), online, strict=True):
        torch.testing.assert_close(new, m * old + (1 - m) * o)
    moved = [(new - old).abs().max() for old, new in
             zip(before, method.target_encoder.parameters(), strict=True)]
    assert max(moved) > 0
    # BatchNorm statistics come over as they are.
    for t, o in zip(method.target_encoder.buffers(), method.encoder.buffers(), strict=True):
        assert torch.equal(t, o)


def test_schedule_length_from_the_training_loop_unless_given():
    method = small_jepa()
    assert method.momentum() == pytest.approx(0.996)  # step 0: the start, for any length
    method.step += 1
    with pytest.raises(RuntimeError, match="total_steps"):
        method.momentum()
    method.set_total_steps(4)
    assert method.total_steps == 4
    method.step += 3
    assert method.momentum() == 1.0
    given = small_jepa(total_steps=1000)
    given.set_total_steps(4)  # an explicit setting wins
    assert given.total_steps == 1000


def test_schedule_resumes_from_a_checkpoint():
    method = small_jepa(total_steps=10)
    for _ in range(3):
        method.after_step()
    fresh = small_jepa(total_steps=10, seed=1)
    fresh.load_state_dict(method.state_dict())
    assert int(fresh.step) == 3 and fresh.momentum() == method.momentum()
    for a, b in zip(fresh.target_encoder.parameters(), method.target_encoder.parameters(),
                    strict=True):
        assert torch.equal(a, b)


# -- loss ------------------------------------------------------------------------------------
def test_loss_by_hand():
    target = torch.randn(3, 4, 5)
    select = torch.tensor([[1, 0, 0, 1], [0, 0, 0, 0], [0, 1, 0, 0]], dtype=torch.bool)
    garbage = target + 100.0 * (~select).unsqueeze(-1)
    assert jepa_loss(garbage, target, select) == 0 and jepa_loss(garbage, target, select,
                                                                 "mse") == 0
    off = target + 2.0 * select.unsqueeze(-1) + 100.0 * (~select).unsqueeze(-1)
    assert jepa_loss(off, target, select).item() == pytest.approx(1.5)  # |d| - 1/2
    assert jepa_loss(off, target, select, "mse").item() == pytest.approx(4.0)
    assert jepa_loss(off, target, torch.zeros_like(select)).item() == 0
    with pytest.raises(ValueError, match="unknown JEPA loss 'l1'"):
        jepa_loss(off, target, select, "l1")


@pytest.mark.parametrize("encoder", ["part", "transformer"])
def test_targets_never_reach_the_context_encoder(encoder):
    method = small_jepa(encoder).train()
    batch = jet_batch()
    context, _ = method.sample(batch["x"], batch["v"], batch["mask"],
                               torch.Generator().manual_seed(0))
    hidden = batch["mask"] & ~context
    x2, v2 = batch["x"].clone(), batch["v"].clone()
    x2[hidden] = 5 * torch.randn(int(hidden.sum()), N_FEATURES)
    v2[hidden] *= 2.0
    a = method.encoder.particles(batch["x"], batch["v"], context)
    b = method.encoder.particles(x2, v2, context)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    # The target encoder, which sees the whole jet, does notice.
    ta = method.target_embeddings(batch["x"], batch["v"], batch["mask"])
    tb = method.target_embeddings(x2, v2, batch["mask"])
    assert (ta - tb)[hidden].abs().max() > 1e-3


@pytest.mark.parametrize(("encoder", "blocks"), [("part", "neighbourhood"),
                                                 ("transformer", "pt")])
def test_a_few_steps_lower_the_loss(encoder, blocks):
    # With the target encoder held (no after_step) the objective is fixed.
    method = small_jepa(encoder, blocks=blocks).train()
    batch = jet_batch(n=6, p=12)
    fixed = method.sample(batch["x"], batch["v"], batch["mask"],
                          torch.Generator().manual_seed(4))
    optimizer = torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(12):
        loss, _ = method.losses(batch, fixed)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_forward_logs_representation_and_errors():
    method = small_jepa(total_steps=7)
    batch = jet_batch()
    loss, logs = method(batch)
    assert loss.requires_grad and math.isfinite(loss.item())
    assert set(logs) == {"jepa", "ema_momentum", "context_fraction", "target_fraction"}
    assert logs["context_fraction"] + logs["target_fraction"] == pytest.approx(1.0)
    assert method.represent(batch).shape == (8, method.encoder.embed_dim)
    assert METHODS["jepa"] is JEPA
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="'jepa' needs an encoder with per-particle outputs"):
        build_method("jepa", build_encoder("particlenet", N_FEATURES, embed_dims=(8,),
                                           edge_dims=((8,),), k=3))
    part = build_encoder("part", N_FEATURES, **SMALL["part"])
    with pytest.raises(ValueError, match=r"unknown blocks 'random'.*neighbourhood, pt"):
        build_method("jepa", part, blocks="random")
    with pytest.raises(ValueError, match="unknown setting 'momentum'"):
        build_method("jepa", part, momentum=0.99)
    with pytest.raises(ValueError, match="total_steps must be >= 1"):
        build_method("jepa", part, total_steps=0)


@pytest.mark.parametrize("encoder", ["part", "transformer"])
def test_shipped_config_builds(encoder):
    from resim.train.config import load_config
    from resim.train.features import N_FEATURES as N_INPUTS

    config = load_config(f"jepa_{encoder}")
    enc = build_encoder(config.encoder.name, N_INPUTS, **config.encoder.settings)
    method = build_method(config.method.name, enc, **config.method.settings)
    assert isinstance(method, JEPA) and config.encoder.name == encoder
    assert (method.n_targets, method.target_fraction, method.blocks) == (4, 0.15,
                                                                         "neighbourhood")
    assert method.momentum() == pytest.approx(0.996)


def test_ema_init_share_measures_how_far_the_target_moved() -> None:
    from resim.train.methods.jepa import ema_init_share

    # I-JEPA's schedule: in a short run the target stays mostly at its random weights
    assert ema_init_share(220) == pytest.approx(0.64, abs=0.01)
    assert ema_init_share(2000) == pytest.approx(0.018, abs=0.002)
    assert ema_init_share(220, start=0.95) < 0.01
    assert ema_init_share(10, start=0.5, schedule="constant") == pytest.approx(0.5 ** 10)

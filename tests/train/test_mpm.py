"""Masked particle modelling: mask sampling, losses by hand, no leak of hidden particles."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from resim.train.encoders import build_encoder
from resim.train.features import FEATURES, N_FEATURES, PHOTON, Particles, features
from resim.train.methods import METHODS, build_method
from resim.train.methods.mpm import (
    MPM,
    masked_class_loss,
    masked_regression_loss,
    sample_mask,
)

# Tiny encoders, dropout off so train mode (BatchNorm on batch statistics) is deterministic.
SMALL = {
    "part": dict(embed_dims=(16, 16), pair_embed_dims=(8, 8), num_heads=2, num_layers=2,
                 num_cls_layers=1, dropout=0.0, attn_dropout=0.0, activation_dropout=0.0),
    "transformer": dict(embed_dims=(16, 16), num_heads=2, num_layers=2, num_cls_layers=1,
                        dropout=0.0, attn_dropout=0.0, activation_dropout=0.0),
}
DECODER = dict(decoder_dim=16, decoder_heads=2, decoder_layers=1)


pytestmark = pytest.mark.usefixtures("one_thread")


def jet_batch(n: int = 8, slots: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    """Jets of 2..slots particles around random axes, as the loaders deliver them."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(2, slots + 1, n)
    counts[0] = slots
    mask = np.arange(slots) < counts[:, None]
    pt = np.where(mask, rng.exponential(20.0, (n, slots)) + 1.0, 0.0)
    eta = rng.uniform(-1, 1, (n, 1)) + 0.3 * rng.standard_normal((n, slots))
    phi = rng.uniform(-3, 3, (n, 1)) + 0.3 * rng.standard_normal((n, slots))
    charge = np.where(mask, rng.choice([-1.0, 0.0, 1.0], (n, slots)), 0.0)

    def padded(a):
        return np.where(mask, a, 0).astype(np.float32)

    p = Particles(px=padded(pt * np.cos(phi)), py=padded(pt * np.sin(phi)),
                  pz=padded(pt * np.sinh(eta)), energy=padded(pt * np.cosh(eta)),
                  charge=padded(charge), kind=np.where(charge != 0, 0, PHOTON).astype(np.int8),
                  d0=padded(0.1 * charge), dz=padded(-0.1 * charge), mask=mask)
    p.kind[~mask] = 0
    x, v = features(p)
    return {"x": torch.from_numpy(x), "v": torch.from_numpy(v), "mask": torch.from_numpy(mask)}


def small_mpm(encoder: str = "part", seed: int = 0, **settings) -> MPM:
    torch.manual_seed(seed)
    enc = build_encoder(encoder, N_FEATURES, **SMALL[encoder])
    return build_method("mpm", enc, **(DECODER | settings))


# -- mask sampling --------------------------------------------------------------------------
def test_mask_fraction_and_at_least_one_never_all():
    counts = torch.tensor([0, 1, 2, 3, 5, 10, 20, 40])
    mask = torch.arange(40) < counts.unsqueeze(1)
    gen = torch.Generator().manual_seed(0)
    hidden = sample_mask(mask, 0.3, gen)
    assert not (hidden & ~mask).any()
    # round(0.3 n), at least one, never all: none for jets of 0 or 1 particle.
    assert hidden.sum(1).tolist() == [0, 0, 1, 1, 2, 3, 6, 12]
    assert sample_mask(mask, 0.95, gen).sum(1).tolist() == [0, 0, 1, 2, 4, 9, 19, 38]
    # Uniform over the jet's particles: every particle hidden ~30 % of the time.
    many = torch.stack([sample_mask(mask, 0.3, gen) for _ in range(2000)]).float().mean(0)
    np.testing.assert_allclose(many[-1, :40].numpy(), 0.3, atol=0.04)
    assert (many[~mask] == 0).all()


def test_mask_is_reproducible_with_a_generator():
    mask = torch.ones(4, 30, dtype=torch.bool)
    a = sample_mask(mask, 0.3, torch.Generator().manual_seed(5))
    b = sample_mask(mask, 0.3, torch.Generator().manual_seed(5))
    c = sample_mask(mask, 0.3, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


# -- losses by hand ---------------------------------------------------------------------------
def test_regression_loss_counts_hidden_particles_only():
    target = torch.randn(2, 5, 3)
    hidden = torch.tensor([[1, 0, 0, 1, 0], [0, 0, 1, 0, 0]], dtype=torch.bool)
    garbage = target + 100.0 * (~hidden).unsqueeze(-1)
    for kind in ("l1", "mse", "smooth_l1"):
        assert masked_regression_loss(garbage, target, hidden, kind) == 0
    off = target + 0.5 * hidden.unsqueeze(-1) + 100.0 * (~hidden).unsqueeze(-1)
    assert masked_regression_loss(off, target, hidden, "l1").item() == pytest.approx(0.5)
    assert masked_regression_loss(off, target, hidden, "mse").item() == pytest.approx(0.25)
    assert masked_regression_loss(off, target, hidden, "smooth_l1").item() == pytest.approx(
        0.125)
    nothing = torch.zeros_like(hidden)
    assert masked_regression_loss(garbage.requires_grad_(), target, nothing).item() == 0
    with pytest.raises(ValueError, match="unknown regression loss 'l2'"):
        masked_regression_loss(target, target, hidden, "l2")


def test_class_loss_by_hand():
    classes = torch.tensor([[0, 3, 1], [4, 2, 2]])
    hidden = torch.tensor([[1, 0, 1], [0, 1, 0]], dtype=torch.bool)
    exact = 50.0 * torch.nn.functional.one_hot(classes, 5).float()
    exact[~hidden] = torch.tensor([50.0, 0, 0, 0, 0])  # wrong, but not hidden
    assert masked_class_loss(exact, classes, hidden).item() < 1e-6
    uniform = torch.zeros(2, 3, 5)
    assert masked_class_loss(uniform, classes, hidden).item() == pytest.approx(math.log(5))


# -- the method -----------------------------------------------------------------------------------
@pytest.mark.parametrize("encoder", ["part", "transformer"])
def test_hidden_particles_never_reach_the_encoder(encoder):
    method = small_mpm(encoder).train()  # BatchNorm on batch statistics: must not see them
    batch = jet_batch()
    hidden = sample_mask(batch["mask"], 0.3, torch.Generator().manual_seed(1))
    x2, v2 = batch["x"].clone(), batch["v"].clone()
    gen = torch.Generator().manual_seed(2)
    x2[hidden] = 10 * torch.randn(int(hidden.sum()), N_FEATURES, generator=gen)
    v2[hidden] = 100 * torch.rand(int(hidden.sum()), 4, generator=gen) + 1
    outputs = []
    for x, v in ((batch["x"], batch["v"]), (x2, v2)):
        h = method.encode_masked(x, v, batch["mask"], hidden)
        outputs.append((h, *method.decode(h, batch["mask"])))
    for a, b in zip(outputs[0], outputs[1], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    # ... while the visible particles do shape the predictions at hidden positions.
    x3 = batch["x"].clone()
    visible = batch["mask"] & ~hidden
    x3[visible] += torch.randn(int(visible.sum()), N_FEATURES, generator=gen)
    h3 = method.encode_masked(x3, batch["v"], batch["mask"], hidden)
    assert (h3[hidden] - outputs[0][0][hidden]).abs().max() > 1e-3


def test_pair_bias_without_the_visible_only_pairs_would_leak():
    # The check above can fail: ParT's pair features with all particles see hidden 4-vectors.
    method = small_mpm("part").train()
    batch = jet_batch()
    hidden = sample_mask(batch["mask"], 0.3, torch.Generator().manual_seed(1))
    v2 = batch["v"].clone()
    v2[hidden] *= 3.0
    h = method.encoder.embed(batch["x"] * (~hidden).unsqueeze(-1), batch["mask"] & ~hidden)
    a = method.encoder.encode(h, batch["v"], batch["mask"])
    b = method.encoder.encode(h, v2, batch["mask"])
    assert (a - b)[batch["mask"] & ~hidden].abs().max() > 1e-4


@pytest.mark.parametrize("order_tokens", [0, 16])
def test_ordinal_mask_tokens_tell_hidden_particles_apart(order_tokens):
    method = small_mpm("transformer", order_tokens=order_tokens).eval()
    batch = jet_batch()
    hidden = torch.zeros_like(batch["mask"])
    hidden[0, [2, 7]] = True  # jet 0 has all 16 slots real
    h = method.encode_masked(batch["x"], batch["v"], batch["mask"], hidden)
    difference = (h[0, 2] - h[0, 7]).abs().max().item()
    if order_tokens:
        assert difference > 1e-3
    else:  # identical tokens, no positions: a permutation-equivariant encoder can't tell
        assert difference < 1e-5


def test_targets_are_the_features_and_particle_type():
    method = small_mpm(normalize_targets=False)
    batch = jet_batch()
    target, kind = method.targets(batch["x"], batch["mask"])
    kinds = [FEATURES.index(n) for n in FEATURES if n.startswith("is_")]
    assert method.kind_columns == kinds
    assert target.shape[-1] == N_FEATURES - 5
    assert torch.equal(target, batch["x"][..., method.regression_columns])
    is_photon = batch["x"][..., FEATURES.index("is_photon")] == 1
    assert (kind[is_photon] == PHOTON).all() and (kind[batch["mask"] & ~is_photon] == 0).all()
    # Standardised targets: mean 0, unit variance over the batch's real particles.
    normed = small_mpm().train().targets(batch["x"], batch["mask"])[0][batch["mask"]]
    varying = normed.std(0) > 0
    torch.testing.assert_close(normed.mean(0), torch.zeros(normed.shape[1]), atol=1e-5,
                               rtol=0)
    torch.testing.assert_close(normed.std(0, unbiased=False)[varying],
                               torch.ones(int(varying.sum())), atol=1e-3, rtol=0)


@pytest.mark.parametrize("encoder", ["part", "transformer"])
def test_a_few_steps_lower_the_loss(encoder):
    method = small_mpm(encoder).train()
    batch = jet_batch(n=6, slots=12)
    hidden = sample_mask(batch["mask"], 0.3, torch.Generator().manual_seed(3))
    optimizer = torch.optim.Adam(method.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        loss, terms = method.losses(batch, hidden)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses
    assert set(terms) == {"regression", "kind", "kind_accuracy", "hidden_fraction"}


def test_forward_logs_and_representation():
    method = small_mpm()
    batch = jet_batch()
    loss, logs = method(batch)
    assert loss.requires_grad and math.isfinite(loss.item())
    assert logs["mpm"] == pytest.approx(logs["regression"] + logs["kind"], rel=1e-5)
    assert 0.2 < logs["hidden_fraction"] < 0.4
    assert method.represent(batch).shape == (8, method.encoder.embed_dim)


def test_settings_errors():
    assert METHODS["mpm"] is MPM
    torch.manual_seed(0)
    with pytest.raises(ValueError, match=r"'mpm' needs an encoder with per-particle outputs"
                                         r".*ParticleNet"):
        build_method("mpm", build_encoder("particlenet", N_FEATURES, embed_dims=(8,),
                                          edge_dims=((8,),), k=3))
    part = build_encoder("part", 7, **SMALL["part"])
    with pytest.raises(ValueError, match="kind_classification needs the 15 inputs"):
        build_method("mpm", part)
    assert build_method("mpm", part, kind_classification=False, **DECODER).kind_columns == []
    with pytest.raises(ValueError, match="unknown setting 'mask_ratio'"):
        build_method("mpm", part, mask_ratio=0.3)
    with pytest.raises(ValueError, match="mask_fraction must be in"):
        build_method("mpm", part, mask_fraction=1.0, kind_classification=False)
    with pytest.raises(ValueError, match="unknown regression_loss 'l2'"):
        build_method("mpm", part, regression_loss="l2", kind_classification=False)


@pytest.mark.parametrize("encoder", ["part", "transformer"])
def test_shipped_config_builds(encoder):
    from resim.train.config import load_config

    config = load_config(f"mpm_{encoder}")
    enc = build_encoder(config.encoder.name, N_FEATURES, **config.encoder.settings)
    method = build_method(config.method.name, enc, **config.method.settings)
    assert isinstance(method, MPM) and config.encoder.name == encoder
    assert method.mask_fraction == 0.3 and method.kind_columns
    # Enough ordinal tokens for the most particles a jet can hide.
    assert method.order_embedding.num_embeddings >= 0.3 * config.data.max_particles

"""Jet encoders: published sizes, pair features by hand, permutation and padding invariance."""

from __future__ import annotations

import math

import awkward as ak
import numpy as np
import pytest
import torch

import resim
from resim.train.encoders import ENCODERS, build_encoder
from resim.train.encoders.padding import length_buckets, trim
from resim.train.encoders.pairwise import pair_features
from resim.train.encoders.particlenet import knn

N_FEATURES = 7

# Laptop-sized versions; dropout off so train-mode outputs are deterministic.
SMALL = {
    "part": dict(embed_dims=(16, 32, 16), pair_embed_dims=(8, 8), num_heads=2, num_layers=2,
                 num_cls_layers=1, dropout=0.0, attn_dropout=0.0, activation_dropout=0.0),
    "transformer": dict(embed_dims=(16, 32, 16), num_heads=2, num_layers=2, num_cls_layers=1,
                        dropout=0.0, attn_dropout=0.0, activation_dropout=0.0),
    "particlenet": dict(embed_dims=(16,), edge_dims=((16, 16), (16, 16), (24, 24)), k=5),
}


def four_vector(pt, eta, phi, mass=0.0):
    pt, eta, phi = (torch.as_tensor(a, dtype=torch.float64) for a in (pt, eta, phi))
    pz = pt * torch.sinh(eta)
    e = torch.sqrt(pt**2 + pz**2 + mass**2)
    return torch.stack([pt * torch.cos(phi), pt * torch.sin(phi), pz, e], dim=-1)


def jets(n: int = 6, p: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random jets of 3..p particles, padded at the end, features[..., :2] = (Δη, Δφ)."""
    gen = torch.Generator().manual_seed(seed)
    counts = torch.randint(3, p + 1, (n,), generator=gen)
    counts[0] = p
    mask = torch.arange(p) < counts.unsqueeze(1)
    deta = 0.3 * torch.randn(n, p, generator=gen)
    dphi = 0.3 * torch.randn(n, p, generator=gen)
    pt = 1 + 50 * torch.rand(n, p, generator=gen)
    v = four_vector(pt, deta + 0.4, dphi, 0.14).float()
    x = torch.randn(n, p, N_FEATURES, generator=gen)
    x[..., 0], x[..., 1] = deta, dphi
    keep = mask.unsqueeze(-1)
    return {"x": x * keep, "v": v * keep, "mask": mask}


def small(name: str, seed: int = 0):
    torch.manual_seed(seed)
    return build_encoder(name, N_FEATURES, **SMALL[name])


def run(encoder, batch):
    return encoder(batch["x"], batch["v"], batch["mask"])


def close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


# -- published settings ----------------------------------------------------------------
def test_part_defaults_have_the_published_size():
    # ParT quotes 2.14M parameters; weaver-core's ParticleTransformer with the paper's
    # settings and 17 inputs has exactly 2,142,196 without its classification layer.
    part = build_encoder("part", 17)
    assert sum(p.numel() for p in part.parameters()) == 2_142_196
    assert part.embed_dim == 128 and len(part.blocks) == 8 and len(part.cls_blocks) == 2
    # Without pair features only the pair embedding (BN(4) + 4->64->64->64->8 with BNs) is gone.
    plain = build_encoder("transformer", 17)
    pair_embedding = 8 + (4 * 64 + 64 + 128) + 2 * (64 * 64 + 64 + 128) + (64 * 8 + 8 + 16)
    assert sum(p.numel() for p in plain.parameters()) == 2_142_196 - pair_embedding
    assert plain.pair_embedding is None


def test_particlenet_defaults_are_rs3l_settings():
    net = build_encoder("particlenet", 17)
    assert net.embed_dim == 128 and len(net.convs) == 3
    assert all(conv.k == 24 for conv in net.convs)
    assert any(isinstance(m, torch.nn.ELU) for m in net.modules())


def test_registry_errors_name_the_bad_key():
    with pytest.raises(ValueError, match=r"unknown encoder 'ParT'.*part, particlenet"):
        build_encoder("ParT", 17)
    with pytest.raises(ValueError, match=r"unknown setting 'layers'.*num_layers"):
        build_encoder("part", 17, layers=3)
    with pytest.raises(ValueError, match=r"'pair_embed_dims' is fixed"):
        build_encoder("transformer", 17, pair_embed_dims=(8,))
    assert set(ENCODERS) == {"part", "transformer", "particlenet"}


# -- pair features ---------------------------------------------------------------------
def test_pair_features_by_hand():
    a = torch.tensor([10.0, 0.0, 0.0, 10.0])  # pT 10 along x, y = 0, φ = 0
    b = torch.tensor([0.0, 5.0, 0.0, 5.0])  # pT 5 along y, y = 0, φ = π/2
    # ΔR = π/2, kT = 5 π/2, z = 5/15, m² = 15² - (10² + 5²) = 100
    expected = [math.log(5 * math.pi / 2), math.log(1 / 3), math.log(math.pi / 2), math.log(100)]
    torch.testing.assert_close(pair_features(a, b), torch.tensor(expected))
    torch.testing.assert_close(pair_features(b, a), torch.tensor(expected))


def test_pair_features_with_rapidity_gap_and_phi_wrap():
    # Massless: m² = 2 pTa pTb (cosh Δy - cos Δφ); φ = 3 and -3 are 2π - 6 apart.
    a, b = four_vector(10.0, 0.0, 3.0), four_vector(2.0, 1.0, -3.0)
    dphi = 2 * math.pi - 6
    delta = math.hypot(1.0, dphi)
    m2 = 2 * 10 * 2 * (math.cosh(1.0) - math.cos(dphi))
    expected = [math.log(2 * delta), math.log(2 / 12), math.log(delta), math.log(m2)]
    torch.testing.assert_close(pair_features(a, b), torch.tensor(expected, dtype=torch.float64))


def test_pair_features_are_finite_for_padding_and_collinear_particles():
    a = torch.tensor([3.0, 4.0, 12.0, 13.0])  # massless
    zero = torch.zeros(4)
    for va, vb in [(a, a), (a, 2 * a), (zero, zero), (a, zero), (zero, a)]:
        features = pair_features(va, vb)
        assert torch.isfinite(features).all(), (va, vb, features)
    # Identical particles: ΔR, kT and m² sit at the 1e-8 floor; z = 1/2.
    features = pair_features(a, a)
    floor = math.log(1e-8)
    torch.testing.assert_close(features, torch.tensor([floor, math.log(0.5), floor, floor]))


# -- nearest neighbours ----------------------------------------------------------------
def test_knn_finds_nearest_real_particles_only():
    # One jet on a line at 0, 1, 3, 7 with a padded slot (at 0.5) between.
    points = torch.tensor([[[0.0, 0.0], [0.5, 0.0], [1.0, 0.0], [3.0, 0.0], [7.0, 0.0]]])
    mask = torch.tensor([[True, False, True, True, True]])
    index, exists = knn(points, mask, k=2)
    neighbours = [set(index[0, i][exists[0, i]].tolist()) for i in range(5)]
    assert neighbours[0] == {2, 3} and neighbours[2] == {0, 3}
    assert neighbours[3] == {2, 0} and neighbours[4] == {3, 2}
    assert neighbours[1] == set()  # the padded slot has no edges
    # A jet with fewer than k + 1 real particles has only the neighbours there are.
    index, exists = knn(points, torch.tensor([[True, False, True, False, False]]), k=3)
    assert exists[0, 0].sum() == 1 and index[0, 0][exists[0, 0]].tolist() == [2]


# -- padding helpers -------------------------------------------------------------------
def test_trim_and_length_buckets():
    mask = torch.tensor([[1, 0, 1, 0, 0], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    trimmed, x = trim(mask, torch.arange(15).view(3, 5))
    assert trimmed.shape == (3, 3) and x[0].tolist() == [0, 1, 2]
    buckets = length_buckets(mask, 2)
    assert [b.tolist() for b in buckets] == [[2, 1], [0]]  # by position of the last particle


# -- invariances -----------------------------------------------------------------------
@pytest.mark.parametrize("name", list(SMALL))
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_encoder_is_permutation_invariant(name, mode):
    encoder = small(name)
    getattr(encoder, mode)()
    batch = jets()
    perm = torch.randperm(batch["x"].shape[1], generator=torch.Generator().manual_seed(3))
    permuted = {k: t[:, perm] for k, t in batch.items()}
    close(run(encoder, permuted), run(encoder, batch))


@pytest.mark.parametrize("name", list(SMALL))
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_encoder_is_blind_to_padding(name, mode):
    # Train mode included: BatchNorm batch statistics must not see the padding either.
    encoder = small(name)
    getattr(encoder, mode)()
    batch = jets()
    n, p = batch["mask"].shape
    # Five extra padded slots scattered among the real ones (not only at the end).
    slots = torch.randperm(p + 5, generator=torch.Generator().manual_seed(4))[:p].sort().values
    padded = {}
    for key, t in batch.items():
        padded[key] = t.new_zeros(n, p + 5, *t.shape[2:])
        padded[key][:, slots] = t
    reference = run(encoder, batch)
    close(run(encoder, padded), reference)
    assert reference.shape == (n, encoder.embed_dim) and torch.isfinite(reference).all()


@pytest.mark.parametrize("name", ["part", "transformer"])
def test_particle_outputs_follow_their_particles(name):
    encoder = small(name).eval()
    batch = jets()
    out = encoder.particles(batch["x"], batch["v"], batch["mask"])
    assert out.shape == (*batch["mask"].shape, encoder.embed_dim)
    assert (out[~batch["mask"]] == 0).all()
    perm = torch.randperm(batch["x"].shape[1], generator=torch.Generator().manual_seed(5))
    permuted = encoder.particles(batch["x"][:, perm], batch["v"][:, perm], batch["mask"][:, perm])
    close(permuted, out[:, perm])


def test_length_groups_do_not_change_results():
    batch = jets(n=9)
    one, four = (small("part").eval() for _ in range(2))
    one.length_groups = 1
    close(run(four, batch), run(one, batch))


def test_part_uses_pair_features_and_transformer_ignores_them():
    batch = jets()
    # Same x, different momenta: a boosted copy of the constituents changes kT and m².
    other = dict(batch, v=batch["v"] * 3.0)
    part, plain = small("part").eval(), small("transformer").eval()
    assert (run(part, other) - run(part, batch)).abs().max() > 1e-3
    close(run(plain, other), run(plain, batch))
    # Gradients reach the pair embedding: the bias is wired into attention.
    run(part.train(), batch).sum().backward()
    grads = [p.grad for p in part.pair_embedding.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", list(SMALL))
def test_jet_without_particles_stays_finite(name):
    batch = jets()
    batch["mask"][1] = False
    batch["x"][1] = 0
    batch["v"][1] = 0
    assert torch.isfinite(run(small(name).eval(), batch)).all()


def test_encoders_on_generated_top_jets(top_dataset):
    """Real constituents (collinear photons, soft hadrons): finite and permutation-invariant."""
    records = resim.open(top_dataset)[0:16]
    cons = records.constituents
    p = int(ak.max(ak.num(cons)))

    def padded(field):
        return torch.tensor(ak.to_numpy(ak.fill_none(ak.pad_none(cons[field], p, clip=True), 0.0)),
                            dtype=torch.float32)

    v = torch.stack([padded(f) for f in ("px", "py", "pz", "E")], dim=-1)
    mask = torch.tensor(ak.to_numpy(ak.fill_none(ak.pad_none(ak.ones_like(cons.px), p), 0)) > 0)
    eta = torch.asinh(v[..., 2] / torch.hypot(v[..., 0], v[..., 1]).clamp(min=1e-9))
    phi = torch.atan2(v[..., 1], v[..., 0])
    jet_eta = torch.tensor(np.asarray(records.eta), dtype=torch.float32).unsqueeze(1)
    jet_phi = torch.tensor(np.asarray(records.phi), dtype=torch.float32).unsqueeze(1)
    x = torch.zeros(*mask.shape, N_FEATURES)
    x[..., 0] = eta - jet_eta
    x[..., 1] = torch.remainder(phi - jet_phi + math.pi, 2 * math.pi) - math.pi
    x[..., 2] = torch.log(torch.hypot(v[..., 0], v[..., 1]).clamp(min=1e-3))
    x = x * mask.unsqueeze(-1)
    batch = {"x": x, "v": v, "mask": mask}
    # Pair features of every real pair (collinear photon pairs from π0 decays included).
    pairs = pair_features(v.unsqueeze(2), v.unsqueeze(1))[mask.unsqueeze(2) & mask.unsqueeze(1)]
    assert torch.isfinite(pairs).all() and pairs[:, 2].max() < math.log(3.0)  # ΔR < 3
    perm = torch.randperm(p, generator=torch.Generator().manual_seed(6))
    for name in SMALL:
        encoder = small(name).eval()
        out = run(encoder, batch)
        assert torch.isfinite(out).all()
        close(run(encoder, {k: t[:, perm] for k, t in batch.items()}), out)

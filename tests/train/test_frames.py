"""Shortcut-free views (resim.train.frames): boosts, rescaling and the jet frame keep
the physics of a jet and remove its absolute rapidity and pT."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from resim.train.config import ConfigError, parse_config
from resim.train.encoders.pairwise import pair_features
from resim.train.features import FEATURES, Particles, features
from resim.train.frames import (
    REFERENCE_PT,
    ViewKinematics,
    boost_and_scale,
    jet_frame,
    jet_rapidity_pt,
)


def jets(n: int = 50, p: int = 24, seed: int = 0) -> Particles:
    """Massless-ish particles around jet axes at rapidity -1.8 ... 1.8, pT 500-1000 GeV."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(3, p + 1, n)
    mask = np.arange(p) < counts[:, None]
    y_jet = rng.uniform(-1.8, 1.8, (n, 1))
    pt = np.sort(rng.exponential(30.0, (n, p)), axis=1)[:, ::-1] + 0.5
    y = y_jet + 0.2 * rng.normal(size=(n, p))
    phi = rng.uniform(-np.pi, np.pi, (n, 1)) + 0.2 * rng.normal(size=(n, p))
    m = 0.14 * (rng.random((n, p)) < 0.6)
    mt = np.hypot(pt, m)
    kinds = rng.integers(0, 5, (n, p)).astype(np.int8)
    z = np.zeros((n, p), np.float32)

    def f(a: np.ndarray) -> np.ndarray:
        return np.where(mask, a, 0).astype(np.float32)

    return Particles(px=f(pt * np.cos(phi)), py=f(pt * np.sin(phi)), pz=f(mt * np.sinh(y)),
                     energy=f(mt * np.cosh(y)), charge=f(np.ones((n, p))),
                     kind=np.where(mask, kinds, 0).astype(np.int8), d0=z, dz=z, mask=mask)


def column(x: np.ndarray, name: str) -> np.ndarray:
    return x[..., FEATURES.index(name)]


def test_a_boost_moves_the_rapidity_and_keeps_pair_features_and_relative_features() -> None:
    p = jets()
    y0, pt0 = jet_rapidity_pt(p)
    delta = np.linspace(-1.0, 1.0, len(p))
    q = boost_and_scale(p, delta, np.ones(len(p)))
    y1, pt1 = jet_rapidity_pt(q)
    np.testing.assert_allclose(y1 - y0, delta, atol=1e-4)
    np.testing.assert_allclose(pt1, pt0, rtol=1e-5)
    x0, v0 = features(p)
    x1, v1 = features(q)
    for name in ("log_pt", "log_pt_rel", "dphi", "charge", "is_photon"):
        np.testing.assert_allclose(column(x1, name), column(x0, name), atol=2e-4)
    assert not np.allclose(column(x1, "log_e"), column(x0, "log_e"), atol=1e-2)
    # ParT's pair features use rapidity: a longitudinal boost leaves all four unchanged
    a = torch.from_numpy(v0[:, :5]).unsqueeze(2).expand(-1, -1, 5, -1)
    b = torch.from_numpy(v0[:, :5]).unsqueeze(1).expand(-1, 5, -1, -1)
    a1 = torch.from_numpy(v1[:, :5]).unsqueeze(2).expand(-1, -1, 5, -1)
    b1 = torch.from_numpy(v1[:, :5]).unsqueeze(1).expand(-1, 5, -1, -1)
    real = torch.from_numpy(p.mask[:, :5])
    pairs = real.unsqueeze(2) & real.unsqueeze(1) & ~torch.eye(5, dtype=torch.bool)
    torch.testing.assert_close(pair_features(a1, b1)[pairs], pair_features(a, b)[pairs],
                               atol=2e-3, rtol=1e-3)


def test_rescaling_shifts_log_momenta_and_keeps_ratios() -> None:
    p = jets(seed=1)
    q = boost_and_scale(p, np.zeros(len(p)), np.full(len(p), 2.0))
    x0, _ = features(p)
    x1, _ = features(q)
    m = p.mask
    np.testing.assert_allclose(column(x1, "log_pt")[m], column(x0, "log_pt")[m] + np.log(2),
                               atol=1e-4)
    for name in ("log_pt_rel", "log_e_rel", "deta", "dphi", "delta_r"):
        np.testing.assert_allclose(column(x1, name), column(x0, name), atol=1e-4)


def test_the_jet_frame_removes_jet_rapidity_and_pt() -> None:
    p = jets(seed=2)
    q = jet_frame(p)
    y, pt = jet_rapidity_pt(q)
    np.testing.assert_allclose(y, 1e-3, atol=1e-5)
    np.testing.assert_allclose(pt, REFERENCE_PT, rtol=1e-5)
    # two views of one jet at other rapidities (same hemisphere: the features mirror the
    # other) and scales look identical in the jet frame
    r = boost_and_scale(p, 0.5 * jet_rapidity_pt(p)[0], np.full(len(p), 1.3))
    x1, v1 = features(jet_frame(r))
    x0, v0 = features(q)
    np.testing.assert_allclose(x1, x0, atol=5e-4)
    np.testing.assert_allclose(v1, v0, rtol=1e-4, atol=1e-2)


def test_view_kinematics_draws_independent_rapidities_and_scales() -> None:
    p = jets(n=4000, seed=3)
    _, pt0 = jet_rapidity_pt(p)
    view = ViewKinematics(boost=2.0, pt_scale=(0.8, 1.25))
    q = view(p, np.random.default_rng(0))
    y, pt = jet_rapidity_pt(q)
    assert abs(y).max() <= 2.0 + 1e-4
    assert abs(np.mean(y)) < 0.1 and np.std(y) == pytest.approx(4 / np.sqrt(12), rel=0.05)
    ratio = np.log(pt / pt0)
    assert ratio.min() >= np.log(0.8) - 1e-5 and ratio.max() <= np.log(1.25) + 1e-5
    assert np.std(ratio) == pytest.approx((np.log(1.25) - np.log(0.8)) / np.sqrt(12), rel=0.05)
    # the same generator state gives the same views; nothing drawn when inactive
    again = view(p, np.random.default_rng(0))
    np.testing.assert_array_equal(again.pz, q.pz)
    assert not ViewKinematics().active
    with pytest.raises(ValueError):
        ViewKinematics(pt_scale=(2.0, 1.0))


def test_config_keys() -> None:
    c = parse_config('[data]\nframe = "jet"\n[data.views]\nboost = 2.0\n'
                     'pt_scale = [0.8, 1.25]\n')
    assert c.data.frame == "jet" and c.data.views.boost == 2.0
    assert c.data.views.pt_scale == (0.8, 1.25)
    for text, key in (('[data]\nframe = "beam"\n', "data.frame"),
                      ("[data.views]\nboost = -1.0\n", "data.views.boost"),
                      ("[data.views]\npt_scale = [1.5, 1.0]\n", "data.views.pt_scale")):
        with pytest.raises(ConfigError) as err:
            parse_config(text, "c.toml")
        assert err.value.key == key

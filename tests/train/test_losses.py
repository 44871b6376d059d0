"""NT-Xent and VICReg against hand arithmetic, group-id semantics, and gathering across ranks."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch.nn import functional

from resim.train.losses import gather_across_ranks, nt_xent, vicreg


def lse(*values: float) -> float:
    return math.log(sum(math.exp(v) for v in values))


# -- NT-Xent ---------------------------------------------------------------------------
def test_nt_xent_two_groups_of_two_by_hand():
    # Unit vectors except z2 (length 2, cosine similarity must normalise it away).
    z = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 2.0], [-1.0, 0.0]])
    group = torch.tensor([0, 0, 1, 1])
    t = 0.5
    # cosines: c01 = 0.6, c02 = 0, c03 = -1, c12 = 0.8, c13 = -0.6, c23 = 0; s = c / t
    s01, s02, s03, s12, s13, s23 = 0.6 / t, 0.0, -1 / t, 0.8 / t, -0.6 / t, 0.0
    l0 = lse(s01, s02, s03) - s01
    l1 = lse(s01, s12, s13) - s01
    l2 = lse(s02, s12, s23) - s23
    l3 = lse(s03, s13, s23) - s23
    expected = (l0 + l1 + l2 + l3) / 4
    assert nt_xent(z, group, temperature=t).item() == pytest.approx(expected, rel=1e-6)


def test_nt_xent_three_views_and_a_singleton_by_hand():
    # Group 0 has three views; row 3 is alone: not an anchor, but a negative for the others.
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    group = torch.tensor([7, 7, 7, 3])
    # t = 1, s_ij = cosines. Every anchor's denominator holds e^0 + e^0 + e^-1 = 2 + 1/e.
    #   anchor 0: positives s01 = 0, s02 = -1  -> l0 = log(2 + 1/e) + 1/2
    #   anchor 1: positives s10 = 0, s12 = 0   -> l1 = log(2 + 1/e)
    #   anchor 2: positives s20 = -1, s21 = 0  -> l2 = log(2 + 1/e) + 1/2
    expected = math.log(2 + 1 / math.e) + 1 / 3
    assert nt_xent(z, group, temperature=1.0).item() == pytest.approx(expected, rel=1e-6)


def test_nt_xent_with_two_views_is_simclr_cross_entropy():
    # SimCLR's usual form: batch [a; b], the target of row i is its partner i +- n.
    torch.manual_seed(0)
    n = 6
    z = torch.randn(2 * n, 5)
    group = torch.arange(2 * n) % n
    zn = functional.normalize(z, dim=1)
    logits = (zn @ zn.T / 0.1).fill_diagonal_(float("-inf"))
    target = (torch.arange(2 * n) + n) % (2 * n)
    expected = functional.cross_entropy(logits, target)
    assert nt_xent(z, group).item() == pytest.approx(expected.item(), rel=1e-5)


def test_nt_xent_positives_come_from_group_ids_not_row_order():
    torch.manual_seed(1)
    z = torch.randn(12, 4)
    group = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 4])
    perm = torch.randperm(12)
    assert nt_xent(z[perm], group[perm]).item() == pytest.approx(nt_xent(z, group).item(),
                                                                 rel=1e-6)
    # Relabelling groups by other ids changes nothing either.
    assert nt_xent(z, group * 1000 + 17).item() == pytest.approx(nt_xent(z, group).item())


def test_nt_xent_gradient_pulls_positives_together():
    torch.manual_seed(2)
    z = torch.randn(8, 3, requires_grad=True)
    group = torch.arange(8) // 2
    nt_xent(z, group).backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    # A small step against the gradient raises every positive pair's cosine on average.
    before = functional.cosine_similarity(z[0::2], z[1::2]).mean()
    stepped = z - 0.05 * z.grad
    after = functional.cosine_similarity(stepped[0::2], stepped[1::2]).mean()
    assert after > before


def test_nt_xent_without_positives_is_zero_and_differentiable():
    z = torch.randn(4, 3, requires_grad=True)
    loss = nt_xent(z, torch.arange(4))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(z.grad, torch.zeros_like(z))


# -- VICReg ----------------------------------------------------------------------------
def test_vicreg_two_groups_of_two_by_hand():
    z = torch.tensor([[0.25, 0.0], [0.75, 0.0], [0.0, 0.5], [0.0, 1.0]])
    group = torch.tensor([0, 0, 1, 1])
    # invariance: pairs (0, 1) and (2, 3) differ by 0.5 in one of D = 2 dimensions
    invariance = (0.5**2 / 2 + 0.5**2 / 2) / 2
    # variance (unbiased, over 4 rows): column 0 = 0.25, 0.75, 0, 0 (mean 0.25):
    #   (0 + 0.25 + 0.0625 + 0.0625) / 3 = 0.125
    # column 1 = 0, 0, 0.5, 1 (mean 0.375): (0.140625 * 2 + 0.015625 + 0.390625) / 3 = 0.6875/3
    std0 = math.sqrt(0.125 + 1e-4)
    std1 = math.sqrt(0.6875 / 3 + 1e-4)
    variance = ((1 - std0) + (1 - std1)) / 2
    # covariance: deviations (0, .5, -.25, -.25) . (-.375, -.375, .125, .625) = -0.375
    cov01 = -0.375 / 3
    covariance = 2 * cov01**2 / 2
    terms = vicreg(z, group)
    assert terms.invariance.item() == pytest.approx(invariance, rel=1e-6)
    assert terms.variance.item() == pytest.approx(variance, rel=1e-6)
    assert terms.covariance.item() == pytest.approx(covariance, rel=1e-6)
    assert terms.total.item() == pytest.approx(25 * invariance + 25 * variance + covariance,
                                               rel=1e-6)


def test_vicreg_invariance_is_paper_mse_for_two_aligned_views():
    torch.manual_seed(3)
    za, zb = torch.randn(10, 6), torch.randn(10, 6)
    z = torch.cat([za, zb])
    group = torch.cat([torch.arange(10), torch.arange(10)])
    assert vicreg(z, group).invariance.item() == pytest.approx(
        functional.mse_loss(za, zb).item(), rel=1e-5)


def test_vicreg_invariance_averages_all_pairs_of_a_group():
    z = torch.tensor([[0.0], [1.0], [3.0], [10.0]])
    group = torch.tensor([0, 0, 0, 1])
    # pairs in group 0: (0,1) -> 1, (0,2) -> 9, (1,2) -> 4; the singleton has none
    assert vicreg(z, group).invariance.item() == pytest.approx((1 + 9 + 4) / 3)


def test_vicreg_is_row_order_invariant_and_has_gradients():
    torch.manual_seed(4)
    z = torch.randn(16, 8, requires_grad=True)
    group = torch.arange(16) % 5
    perm = torch.randperm(16)
    a, b = vicreg(z, group), vicreg(z[perm], group[perm])
    for x, y in zip(a, b, strict=True):
        assert x.item() == pytest.approx(y.item(), rel=1e-5)
    a.total.backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_vicreg_nearly_equal_views_give_tiny_invariance():
    # Large embeddings, views 1e-3 apart: the pairwise form must not lose this to rounding.
    torch.manual_seed(5)
    base = 100 * torch.randn(4, 512)
    z = torch.cat([base, base + 1e-3])
    group = torch.cat([torch.arange(4), torch.arange(4)])
    assert vicreg(z, group).invariance.item() == pytest.approx(1e-6, rel=1e-2)


# -- gathering across DDP ranks ---------------------------------------------------------
def test_gather_is_identity_without_a_process_group():
    z, group = torch.randn(3, 2), torch.arange(3)
    gz, gg = gather_across_ranks(z, group)
    assert gz is z and gg is group


WORKER = textwrap.dedent("""
    import sys, warnings, torch, torch.distributed as dist
    warnings.simplefilter("error", FutureWarning)  # no deprecated collective API
    from resim.train.losses import gather_across_ranks, nt_xent
    rank, store, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    torch.manual_seed(0)
    z_all, g_all = torch.randn(7, 4), torch.tensor([0, 1, 2, 0, 1, 2, 3])
    rows = slice(0, 4) if rank == 0 else slice(4, 7)   # unequal shares: 4 and 3 rows
    z = z_all[rows].clone().requires_grad_(True)
    gz, gg = gather_across_ranks(z, g_all[rows])
    loss = nt_xent(gz, gg)
    loss.backward()
    torch.save({"loss": loss.detach(), "grad": z.grad, "group": gg}, out)
    dist.destroy_process_group()
""")


def test_gather_across_two_ranks_gives_global_loss_and_gradients(tmp_path: Path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(script), str(rank), str(tmp_path / "store"),
                               str(tmp_path / f"rank{rank}.pt")], env=env,
                              stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    results = [torch.load(tmp_path / f"rank{rank}.pt") for rank in (0, 1)]

    torch.manual_seed(0)
    z_all, g_all = torch.randn(7, 4), torch.tensor([0, 1, 2, 0, 1, 2, 3])
    z_all.requires_grad_(True)
    expected = nt_xent(z_all, g_all)
    expected.backward()
    for rank, rows in ((0, slice(0, 4)), (1, slice(4, 7))):
        assert torch.equal(results[rank]["group"], g_all)
        assert results[rank]["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
        # Each rank's backward sums the two ranks' identical losses; DDP's averaging
        # over 2 ranks then gives exactly the single-process gradient.
        torch.testing.assert_close(results[rank]["grad"] / 2, z_all.grad[rows])

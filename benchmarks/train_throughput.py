"""Training throughput on CPU, measured side by side in one run (run by hand, not in CI).

    python benchmarks/train_throughput.py                       # batch 256, 128 particles
    python benchmarks/train_throughput.py --particles 64 --steps 2

Prints jets/s of one RS3L pre-training step (forward + backward + Adam) for each of our
encoders, and the same step with weaver-core's ParticleTransformer (the reference ParT
implementation; ``pip install --no-deps weaver-core``) at the same shapes and sizes.
Targets: ours / weaver >= 1.0, and a data loader at least 3x faster than the step it feeds.

The batch is synthetic with realistic multiplicities (one jet fills all ``--particles``
slots, the others hold 15-100 % of them), so both implementations process the same
padded length. Models are timed in turns, ``--repeats`` rounds, and the median kept:
the machine is shared, and interleaving makes the ratios robust to load changing.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable

import click
import torch
from torch import Tensor

from resim.train.encoders import Encoder, build_encoder
from resim.train.methods import build_method

ENCODERS = ("part", "transformer", "particlenet")


def synthetic_batch(jets: int, particles: int, features: int, views: int = 2,
                    seed: int = 0) -> dict[str, Tensor]:
    """A padded batch shaped like the loader's: ``jets`` rows in groups of ``views``."""
    gen = torch.Generator().manual_seed(seed)
    counts = (particles * (0.15 + 0.85 * torch.rand(jets, generator=gen))).long()
    counts[0] = particles
    mask = torch.arange(particles) < counts.unsqueeze(1)
    pt = 100 * torch.distributions.Exponential(1.0).sample((jets, particles))
    deta = 0.3 * torch.randn(jets, particles, generator=gen)
    dphi = 0.3 * torch.randn(jets, particles, generator=gen)
    eta = deta + 0.5
    v = torch.stack([pt * dphi.cos(), pt * dphi.sin(), pt * eta.sinh(), pt * eta.cosh()], dim=-1)
    x = torch.randn(jets, particles, features, generator=gen)
    x[..., 0], x[..., 1] = deta, dphi
    keep = mask.unsqueeze(-1)
    return {"x": x * keep, "v": v * keep, "mask": mask,
            "group": torch.arange(jets) // views, "label": torch.zeros(jets, dtype=torch.long),
            "variation": torch.arange(jets) % views}


class WeaverParT(Encoder):
    """weaver-core's ParticleTransformer behind our encoder interface (channels-last in)."""

    def __init__(self, n_features: int, with_pairs: bool = True, trim: bool = False,
                 **sizes):
        super().__init__()
        from weaver.nn.model.ParticleTransformer import ParticleTransformer

        logging.getLogger("weaver").setLevel(logging.WARNING)
        if not with_pairs:
            sizes["pair_embed_dims"] = None
        self.model = ParticleTransformer(input_dim=n_features, num_classes=None,
                                         fc_params=None, trim=trim, **sizes)
        self.n_features = n_features
        self.embed_dim = self.model.norm.normalized_shape[0]

    def forward(self, x: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        return self.model(x.transpose(1, 2), v.transpose(1, 2), mask.unsqueeze(1).float())


def weaver_available() -> bool:
    try:
        import weaver.nn.model.ParticleTransformer  # noqa: F401
    except ImportError:
        return False
    return True


def training_step(encoder: Encoder, batch: dict[str, Tensor]) -> Callable[[], None]:
    """One RS3L step (forward, backward, Adam) on ``batch``, as a closure."""
    method = build_method("rs3l", encoder)
    optimizer = torch.optim.Adam(method.parameters(), lr=1e-3)

    def step() -> None:
        loss, _ = method(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        method.after_step()

    return step


def step_throughput(steps: dict[str, Callable[[], None]], jets: int, n_steps: int,
                    repeats: int) -> dict[str, float]:
    """Median jets/s of each step closure, timing them in turns ``repeats`` times."""
    for step in steps.values():  # warm-up: allocator, thread pools, weaver's first calls
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(n_steps):
                step()
            times[name].append((time.perf_counter() - start) / n_steps)
    return {name: jets / statistics.median(t) for name, t in times.items()}


def loader_throughput(jets: int, particles: int) -> float | None:
    """Jets/s of the data pipeline alone (HDF5 -> padded batch tensors).

    TO BE FILLED IN with ``resim.train.loader`` (issue 4, data/loop part): build a loader on
    a generated data set with batch ``jets`` and ``particles`` slots, iterate a few epochs'
    worth of batches and return jets per second. Returns None until then.
    """
    return None


@click.command()
@click.option("--jets", default=256, show_default=True, help="Jets per batch (groups x views).")
@click.option("--particles", default=128, show_default=True, help="Padded particles per jet.")
@click.option("--features", default=17, show_default=True, help="Features per particle.")
@click.option("--steps", default=2, show_default=True, help="Steps per timing.")
@click.option("--repeats", default=3, show_default=True, help="Timing rounds (median kept).")
@click.option("--encoders", default=",".join(ENCODERS), show_default=True,
              help="Comma-separated encoders to time.")
@click.option("--threads", default=0, help="torch threads (0: torch's default).")
def main(jets: int, particles: int, features: int, steps: int, repeats: int, encoders: str,
         threads: int) -> None:
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    batch = synthetic_batch(jets, particles, features)
    names = [n.strip() for n in encoders.split(",") if n.strip()]
    closures = {name: training_step(build_encoder(name, features), batch) for name in names}
    reference = {"part": "weaver part", "transformer": "weaver transformer"}
    if weaver_available():
        for ours, theirs in reference.items():
            if ours in names:
                closures[theirs] = training_step(
                    WeaverParT(features, with_pairs=ours == "part"), batch)
    else:
        click.echo("weaver-core is not installed (pip install --no-deps weaver-core): "
                   "skipping the reference ParT")

    click.echo(f"batch {jets} jets x {particles} particles x {features} features, "
               f"{torch.get_num_threads()} threads, median of {repeats} x {steps} steps")
    rates = step_throughput(closures, jets, steps, repeats)
    click.echo(f"{'model':<22}{'jets/s':>10}{'ours/weaver':>14}")
    for name, rate in rates.items():
        theirs = reference.get(name)
        ratio = f"{rate / rates[theirs]:>14.2f}" if theirs in rates else ""
        click.echo(f"{name:<22}{rate:>10.1f}{ratio}")

    loader = loader_throughput(jets, particles)
    if loader is None:
        click.echo("loader: not measured yet (loader_throughput() is to be filled in)")
    else:
        click.echo(f"loader: {loader:.0f} jets/s")
        for name in names:
            click.echo(f"  loader / {name} step = {loader / rates[name]:.1f} (target >= 3)")


if __name__ == "__main__":
    main()

"""Training throughput on CPU, measured side by side in one run (run by hand, not in CI).

    python benchmarks/train_throughput.py                       # batch 256, 128 particles
    python benchmarks/train_throughput.py --particles 64 --steps 2
    python benchmarks/train_throughput.py --data top.h5   # the loader on your own data set

Prints jets/s of one RS3L pre-training step (forward + backward + Adam) for each of our
encoders, and the same step with weaver-core's ParticleTransformer (the reference ParT
implementation; ``pip install --no-deps weaver-core``) at the same shapes and sizes.
Targets: ours / weaver >= 1.0, and a data loader at least 3x faster than the step it feeds
(the loader runs ``resim.train.data.PretrainBatches`` in-process, i.e. what one DataLoader
worker does, on a generated data set at the same batch size and padding).

The batch is synthetic with realistic multiplicities (one jet fills all ``--particles``
slots, the others hold 15-100 % of them), so both implementations process the same
padded length. Models are timed in turns, ``--repeats`` rounds, and the median kept:
the machine is shared, and interleaving makes the ratios robust to load changing.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import click
import torch
from torch import Tensor

from resim.train.encoders import Encoder, build_encoder
from resim.train.features import N_FEATURES
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


LOADER_CARD = Path(__file__).parent / "cards" / "loader.toml"


def loader_data(path: Path | None = None) -> Path:
    """The loader's data set: ``path``, or ``benchmarks/cards/loader.toml`` (boosted tops,
    ~12k jets, ~1M constituents) generated once into ``~/.cache/resim/benchmarks`` (a few
    minutes on two cores; an interrupted generation is resumed) and reused."""
    if path is not None:
        return path
    from resim.card import load_card
    from resim.generate import generate
    from resim.store import parts_dir

    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "resim/benchmarks"
    output = cache / "loader.h5"
    if not output.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        click.echo(f"generating the loader's data set {output} (once)")
        generate(load_card(LOADER_CARD).with_overrides(output=output),
                 resume=parts_dir(output).is_dir())
    return output


def loader_step(jets: int, particles: int, data: Path | None = None) -> Callable[[], None]:
    """A closure making the next pre-training batch of ``jets`` rows (``jets // 2`` groups x
    2 views, ``particles`` slots) from the resim data set, epoch after epoch, in-process.

    This is the whole pipeline a DataLoader worker runs: plan, view choice, h5py reads,
    padding, features, tensors. One worker process runs exactly this, so a loader rate of
    ≥ 3x the step's means one worker keeps the step fed with room to spare.
    """
    from resim.train.data import PretrainBatches

    dataset = PretrainBatches(loader_data(data), split="all", batch_groups=jets // 2,
                              views=2, max_particles=particles, drop_last=True)
    if len(dataset) == 0:
        raise click.UsageError(f"the loader's data set has fewer than {jets // 2} groups")

    def batches():
        epoch = 0
        while True:
            dataset.set_epoch(epoch)
            yield from dataset
            epoch += 1

    stream = batches()
    return lambda: next(stream)


def loader_throughput(jets: int, particles: int, n_batches: int = 4, repeats: int = 3,
                      data: Path | None = None) -> float:
    """Jets/s of the data pipeline alone (HDF5 -> padded batch tensors), median of
    ``repeats`` timings of ``n_batches`` batches of ``jets`` rows and ``particles`` slots."""
    return step_throughput({"loader": loader_step(jets, particles, data)}, jets, n_batches,
                           repeats)["loader"]


@click.command()
@click.option("--jets", default=256, show_default=True, help="Jets per batch (groups x views).")
@click.option("--particles", default=128, show_default=True, help="Padded particles per jet.")
@click.option("--features", default=N_FEATURES, show_default=True,
              help="Features per particle (resim's encoder inputs by default).")
@click.option("--steps", default=2, show_default=True, help="Steps per timing.")
@click.option("--repeats", default=3, show_default=True, help="Timing rounds (median kept).")
@click.option("--encoders", default=",".join(ENCODERS), show_default=True,
              help="Comma-separated encoders to time.")
@click.option("--threads", default=0, help="torch threads (0: torch's default).")
@click.option("--data", "data", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="resim data set for the loader (default: generate "
              "benchmarks/cards/loader.toml once into ~/.cache/resim/benchmarks).")
def main(jets: int, particles: int, features: int, steps: int, repeats: int, encoders: str,
         threads: int, data: Path | None) -> None:
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

    # The loader is timed in the same interleaved rounds as the steps (same machine load).
    closures["loader"] = loader_step(jets, particles, data)
    click.echo(f"batch {jets} jets x {particles} particles x {features} features, "
               f"{torch.get_num_threads()} threads, median of {repeats} x {steps} steps; "
               f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    rates = step_throughput(closures, jets, steps, repeats)
    loader = rates.pop("loader")
    click.echo(f"{'model':<22}{'jets/s':>10}{'ours/weaver':>14}")
    for name, rate in rates.items():
        theirs = reference.get(name)
        ratio = f"{rate / rates[theirs]:>14.2f}" if theirs in rates else ""
        click.echo(f"{name:<22}{rate:>10.1f}{ratio}")

    click.echo(f"loader (one process, HDF5 -> batch): {loader:.0f} jets/s")
    for name in names:
        click.echo(f"  loader / {name} step = {loader / rates[name]:.1f} (target >= 3)")
    click.echo(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

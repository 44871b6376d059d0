"""Training throughput on CPU, measured side by side in one run (run by hand, not in CI).

    python benchmarks/train_throughput.py                       # batch 256, 128 particles
    python benchmarks/train_throughput.py --sizes rs3l_part --particles 64
    python benchmarks/train_throughput.py --data top.h5   # your own jets

Prints jets/s of one RS3L pre-training step (forward + backward + Adam) for each of our
encoders, and the same step with weaver-core's ParticleTransformer (the reference ParT
implementation; ``pip install --no-deps weaver-core``) at the same sizes, both as weaver
ships it (``trim=True``: in training it drops the padding beyond the batch's longest jet,
and jets beyond a length quantile are cut) and with ``trim=False`` (every padded slot
computed). Targets: ours / weaver >= 1.0, and a data loader at least 3x faster than the
step it feeds (the loader runs ``resim.train.data.PretrainBatches`` in-process, i.e. what
one DataLoader worker does, on the same data set at the same batch size and padding).

The batch is real resim jets: the first pre-training batch (``--jets`` / 2 groups x 2
views, the hardest ``--particles`` constituents) of ``--data`` or of the loader's
generated data set (boosted tops, median ~58 constituents); ``--synthetic`` uses random
jets with uniform multiplicities instead. Models are timed in turns, ``--repeats``
rounds; the median and the 16-84 % range of the per-round ratios are printed: the machine
is shared, and interleaving makes the ratios robust to load changing.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import click
import numpy as np
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


def real_batch(jets: int, particles: int, data: Path | None = None) -> dict[str, Tensor]:
    """The first pre-training batch of real resim jets (``jets // 2`` groups x 2 views)."""
    from resim.train.data import PretrainBatches

    dataset = PretrainBatches(loader_data(data), split="all", batch_groups=jets // 2,
                              views=2, max_particles=particles, drop_last=True)
    return next(iter(dataset))


#: Encoder sizes: ParT's published ones (the encoders' defaults) or the shipped small
#: configs' (rs3l_part and the others).
SIZES = {
    "published": {},
    "rs3l_part": {"embed_dims": (64, 64), "pair_embed_dims": (32, 32), "num_heads": 4,
                  "num_layers": 3, "num_cls_layers": 1},
}


class WeaverParT(Encoder):
    """weaver-core's ParticleTransformer behind our encoder interface (channels-last in)."""

    def __init__(self, n_features: int, with_pairs: bool = True, trim: bool = True,
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


def step_rounds(steps: dict[str, Callable[[], None]], n_steps: int,
                repeats: int) -> dict[str, list[float]]:
    """Seconds per step of each closure in each of ``repeats`` rounds, timed in turns."""
    for step in steps.values():  # warm-up: allocator, thread pools, weaver's first calls
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(n_steps):
                step()
            times[name].append((time.perf_counter() - start) / n_steps)
    return times


def step_throughput(steps: dict[str, Callable[[], None]], jets: int, n_steps: int,
                    repeats: int) -> dict[str, float]:
    """Median jets/s of each step closure, timing them in turns ``repeats`` times."""
    return {name: jets / statistics.median(t)
            for name, t in step_rounds(steps, n_steps, repeats).items()}


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
@click.option("--steps", default=2, show_default=True, help="Steps per timing.")
@click.option("--repeats", default=5, show_default=True, help="Timing rounds.")
@click.option("--encoders", default=",".join(ENCODERS), show_default=True,
              help="Comma-separated encoders to time.")
@click.option("--sizes", type=click.Choice(list(SIZES)), default="published",
              show_default=True, help="ParT sizes: published, or the shipped rs3l_part's.")
@click.option("--threads", default=0, help="torch threads (0: torch's default).")
@click.option("--synthetic", is_flag=True, help="Random jets instead of real resim jets.")
@click.option("--data", "data", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="resim data set for the batch and the loader (default: "
              "generate benchmarks/cards/loader.toml once into ~/.cache/resim/benchmarks).")
def main(jets: int, particles: int, steps: int, repeats: int, encoders: str, sizes: str,
         threads: int, synthetic: bool, data: Path | None) -> None:
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    features = N_FEATURES
    batch = synthetic_batch(jets, particles, features) if synthetic else \
        real_batch(jets, particles, data)
    counts = batch["mask"].sum(1).float()
    names = [n.strip() for n in encoders.split(",") if n.strip()]
    closures, reference = _steps(names, SIZES[sizes], features, batch)
    # The loader is timed in the same interleaved rounds as the steps (same machine load).
    closures["loader"] = loader_step(jets, particles, data)
    click.echo(f"batch {jets} {'synthetic' if synthetic else 'resim'} jets x {particles} "
               f"slots (constituents: median {counts.median():.0f}, max {counts.max():.0f}) x "
               f"{features} features, {sizes} sizes, {torch.get_num_threads()} threads, "
               f"{repeats} rounds x {steps} steps; load average {os.getloadavg()[0]:.1f} on "
               f"{os.cpu_count()} cores")
    _report(step_rounds(closures, steps, repeats), reference, names, jets)


def _steps(names: list[str], size: dict, features: int, batch: dict
           ) -> tuple[dict[str, Callable[[], None]], dict[str, list[str]]]:
    """A training step per encoder, and, with weaver-core installed, of weaver's ParT and
    transformer beside ours (``reference``: ours -> the names of weaver's)."""
    closures = {name: training_step(build_encoder(
        name, features, **({k: v for k, v in size.items() if name != "transformer" or
                            k != "pair_embed_dims"} if name != "particlenet" else {})), batch)
        for name in names}
    reference: dict[str, list[str]] = {}
    if not weaver_available():
        click.echo("weaver-core is not installed (pip install --no-deps weaver-core): "
                   "skipping the reference ParT")
        return closures, reference
    for ours in ("part", "transformer"):
        if ours not in names:
            continue
        for trim in (True, False):
            theirs = f"weaver {ours}" + ("" if trim else " no-trim")
            weaver_sizes = {k: v for k, v in size.items()
                            if ours == "part" or k != "pair_embed_dims"}
            closures[theirs] = training_step(
                WeaverParT(features, with_pairs=ours == "part", trim=trim,
                           **weaver_sizes), batch)
            reference.setdefault(ours, []).append(theirs)
    return closures, reference


def _report(rounds: dict[str, list[float]], reference: dict[str, list[str]],
            names: list[str], jets: int) -> None:
    loader = jets / statistics.median(rounds.pop("loader"))
    click.echo(f"{'model':<26}{'jets/s':>9}  {'ours / it: median (16-84 %)':>28}")
    for name, times in rounds.items():
        rate = jets / statistics.median(times)
        ours = next((o for o, refs in reference.items() if name in refs), None)
        ratio = ""
        if ours is not None:
            r = sorted(t / o for o, t in zip(rounds[ours], times, strict=True))
            ratio = f"{statistics.median(r):.2f} ({_quantile(r, 0.16):.2f}-" \
                    f"{_quantile(r, 0.84):.2f})"
        click.echo(f"{name:<26}{rate:>9.1f}  {ratio:>28}")

    click.echo(f"loader (one process, HDF5 -> batch): {loader:.0f} jets/s")
    for name in names:
        click.echo(f"  loader / {name} step = "
                   f"{loader / (jets / statistics.median(rounds[name])):.1f} (target >= 3)")
    click.echo(f"load average at the end {os.getloadavg()[0]:.1f}")


def _quantile(values: list[float], q: float) -> float:
    return float(np.quantile(values, q))


if __name__ == "__main__":
    main()

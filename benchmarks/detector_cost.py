"""What the detector stage costs: time per realization of the detector, and of the
detector-level jets, against a full re-simulation, measured in one run.

    python benchmarks/detector_cost.py [--events 2000]

Target: the detector at most 2 % of a full re-simulation.

One ``resim generate`` run of ``benchmarks/cards/detector.toml`` (the overhead
benchmark's boosted tops, five simple-shower variations, 13.6 TeV, plus
``[detector] preset = "cms"``). Every block times each of its steps (``Pipeline.timings``;
the clustering is timed per level by wrapping ``resim.jets._matched_jets``), so both
sides of the comparison are measured on the same realizations in the same seconds,
interleaved block by block, and the speed drift of this shared machine's cores cancels:

- full re-simulation, per realization: everything a realization costs without a
  detector: its share of the hard process, the re-simulation (Pythia), its visible final
  state, the truth objects, its particle-level jets (clustering, matching) and writing;
- detector, per realization: ``Detector.simulate`` (propagation, tracking, calorimeters,
  particle flow, candidates), with its seeds;
- detector-level jets, per realization: clustering and matching the candidates.

The ratios are sums over the blocks; their 95 % intervals come from resampling blocks.
A ``stage = "detector"`` realization costs the detector, both levels' jets and writing
(no Pythia): printed apart, from the same run's step times.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import statistics
import time
from pathlib import Path
from typing import ClassVar

from timed_run import timed_run

import resim.generate as resim_generate
import resim.jets as resim_jets
from resim.card import load_card
from resim.layout import DETECTOR

CARD = Path(__file__).parent / "cards" / "detector.toml"
FULL = ("hard process", "re-simulation", "final state", "truth", "particle jets", "writing")
DETECTOR_STEPS = ("detector", "detector jets")


class TimedPipeline(resim_generate.Pipeline):
    """The pipeline, recording each block's step times and realizations."""

    blocks: ClassVar[list[tuple[dict[str, float], int]]] = []

    last: ClassVar[resim_generate.Pipeline | None] = None

    def __init__(self, card):
        super().__init__(card)
        self.timings["particle jets"] = self.timings["detector jets"] = 0.0
        TimedPipeline.last = self

    def block(self, first: int, last: int):
        before = dict(self.timings)
        matched = resim_jets._matched_jets

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return matched(*args, **kwargs)
            finally:
                level = args[-1] if len(args) == 6 else kwargs["level"]
                step = "detector jets" if level == DETECTOR else "particle jets"
                self.timings[step] += time.perf_counter() - start

        resim_jets._matched_jets = timed
        try:
            tables, stats = super().block(first, last)
        finally:
            resim_jets._matched_jets = matched
        delta = {k: self.timings[k] - before.get(k, 0.0) for k in self.timings}
        TimedPipeline.blocks.append((delta, stats.realizations))
        return tables, stats


def ratio(blocks: list[tuple[dict[str, float], int]], steps: tuple[str, ...]) -> float:
    return (sum(sum(b[k] for k in steps) for b, _ in blocks)
            / sum(sum(b[k] for k in FULL) for b, _ in blocks))


def interval(blocks, steps, draws: int = 2000) -> tuple[float, float]:
    rng = random.Random(1)
    values = sorted(ratio(rng.choices(blocks, k=len(blocks)), steps) for _ in range(draws))
    return values[int(0.025 * draws)], values[int(0.975 * draws) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=2000,
                        help="hard events (x5 realizations; ~2 min)")
    parser.add_argument("--particle-pt-min", type=float, metavar="GEV",
                        help="the detector ignores softer particles (overrides the preset's "
                             "0: all, as Delphes): shows what that choice costs")
    args = parser.parse_args()
    card = load_card(CARD).with_overrides(events=args.events)
    if args.particle_pt_min is not None:
        spec = card.detector
        spec = dataclasses.replace(spec, geometry=dataclasses.replace(
            spec.geometry, particle_pt_min=args.particle_pt_min))
        card = dataclasses.replace(card, detector=spec, variations=tuple(
            dataclasses.replace(v, detector=spec) for v in card.variations))
    print(f"card {CARD.name}: {args.events} hard events x {card.realizations_per_event} "
          f"simple-shower variations through the {card.detector.preset} detector (particles "
          f"above {card.detector.geometry.particle_pt_min} GeV); "
          f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f} at start")
    blocks, _, _ = timed_run(TimedPipeline, card)
    n = sum(r for _, r in blocks)
    total = {k: sum(b[k] for b, _ in blocks) for k in blocks[0][0]}
    per = {k: 1e3 * v / n for k, v in total.items()}
    full = sum(per[k] for k in FULL)
    print(f"{n} realizations in {len(blocks)} blocks")
    print(f"full re-simulation      : {full:.3f} ms per realization (" + ", ".join(
        f"{k} {per[k]:.3f}" for k in FULL) + ")")
    for name, steps in (("detector", ("detector",)), ("detector-level jets", ("detector jets",)),
                        ("detector + its jets", DETECTOR_STEPS)):
        lo, hi = interval(blocks, steps)
        block_ratios = sorted(sum(b[k] for k in steps) / sum(b[k] for k in FULL)
                              for b, _ in blocks)
        print(f"{name:<24}: {sum(per[k] for k in steps):.3f} ms per realization, "
              f"{100 * ratio(blocks, steps):.2f} % of a full re-simulation (95 % interval "
              f"{100 * lo:.2f} ... {100 * hi:.2f} %; blocks: median "
              f"{100 * statistics.median(block_ratios):.2f} %)"
              + ("   target <= 2 %" if steps == ("detector",) else ""))
    stage = per["detector"] + per["detector jets"] + per["particle jets"] + per["writing"]
    print(f"a stage = \"detector\" realization (no Pythia): ~{stage:.3f} ms, "
          f"{full / stage:.0f} times cheaper than a full re-simulation")


if __name__ == "__main__":
    main()

"""What pileup costs: time per realization at <mu> = 50, drawn from the library or made by
Pythia as it goes, against a full re-simulation and against the hard event's own shower,
measured in one run.

    python benchmarks/pileup_cost.py [--events 1000] [--library-events 10000]

Target: pileup from the library costs less than the hard event's own shower.

One ``resim generate`` run of ``benchmarks/cards/pileup.toml`` (the detector benchmark's
boosted tops, five simple-shower variations, the CMS detector, plus ``[pileup] mu = 50``,
PUPPI). Every block times each of its steps (``Pipeline.timings``), and, on the same
realizations in the same seconds, what they would cost without pileup and with pileup
made by Pythia instead of drawn from the library; so both sides of every comparison are
interleaved block by block, and the speed drift of this shared machine's cores cancels:

- full re-simulation, per realization: its share of the hard process, the re-simulation
  (Pythia), its visible final state, the truth objects, its particle-level jets and
  writing (as ``detector_cost.py`` counts it); with its detector: plus the detector and
  the detector-level jets without pileup; the shower: the re-simulation (Pythia) alone;
- pileup from the library, per realization: the overlay, the mitigation, and what the
  detector and the detector-level jets cost more than they do on the same realizations
  without pileup (the detector is run a second time without it, and its candidates
  clustered, in the same block);
- pileup made as it goes: a separate Pythia (``SoftQCD:inelastic``, the library's own
  instance) making a Poisson(mu) number of minimum-bias events, and reading their visible
  final state, for two realizations per block; plus what the library approach costs
  beyond its draw (detector, jets, mitigation): the alternative to the library.

The ratios are sums over the blocks; their 95 % intervals come from resampling blocks.
Making the library, once per run, is reported apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
from timed_run import timed_run

import resim.generate as resim_generate
import resim.jets as resim_jets
from resim.card import load_card
from resim.generators.pileup import CHUNK_EVENTS, poisson
from resim.layout import DETECTOR

CARD = Path(__file__).parent / "cards" / "pileup.toml"
FULL = ("hard process", "re-simulation", "final state", "truth", "particle jets", "writing")
SHOWER = ("re-simulation",)
DETECTOR_STEPS = ("detector, no pileup", "detector jets, no pileup")
ON_THE_FLY_PER_BLOCK = 2  # realizations whose pileup Pythia makes, per block


class TimedPipeline(resim_generate.Pipeline):
    """The pipeline, recording each block's step times, with the counterfactuals."""

    blocks: ClassVar[list[tuple[dict[str, float], int]]] = []
    last: ClassVar[resim_generate.Pipeline | None] = None

    def __init__(self, card):
        super().__init__(card)
        for step in ("particle jets", "detector jets", "detector, no pileup",
                     "detector jets, no pileup", "made by Pythia", "made by Pythia per"):
            self.timings[step] = 0.0
        self._without = None  # the block's candidates without pileup
        self._rng = np.random.default_rng(7)
        TimedPipeline.last = self

    def _detect(self, particles, jobs):
        out = super()._detect(particles, jobs)
        setups = self._setups
        self._setups = [(detector, None) for detector, _ in setups]
        t = time.perf_counter()
        try:
            self._without, _ = super()._detect(particles, jobs)
        finally:
            self._setups = setups
        self.timings["detector, no pileup"] += time.perf_counter() - t
        return out

    def block(self, first: int, last: int):
        before = dict(self.timings)
        matched = resim_jets._matched_jets

        def timed(*args, **kwargs):
            level = args[-1] if len(args) == 6 else kwargs["level"]
            start = time.perf_counter()
            result = matched(*args, **kwargs)
            step = "detector jets" if level == DETECTOR else "particle jets"
            self.timings[step] += time.perf_counter() - start
            if level == DETECTOR:  # the same candidates without pileup, clustered
                start = time.perf_counter()
                matched(self._without, *args[1:], **kwargs)
                self.timings["detector jets, no pileup"] += time.perf_counter() - start
            return result

        resim_jets._matched_jets = timed
        try:
            tables, stats = super().block(first, last)
        finally:
            resim_jets._matched_jets = matched
        # Pileup as it goes, for a few realizations of this block: Pythia's minimum bias.
        n = int(poisson(self._rng.random(ON_THE_FLY_PER_BLOCK), self.card.pileup.mu).sum())
        start = time.perf_counter()
        self.minimum_bias.events(n, int(self._rng.integers(1, 900_000_000)))
        self.timings["made by Pythia"] += time.perf_counter() - start
        self.timings["made by Pythia per"] += ON_THE_FLY_PER_BLOCK
        delta = {k: self.timings[k] - before.get(k, 0.0) for k in self.timings}
        TimedPipeline.blocks.append((delta, stats.realizations))
        return tables, stats


def library_cost(b: dict[str, float]) -> float:
    """Seconds that pileup from the library added to a block."""
    return (b["pileup"] + b["mitigation"] + b["detector"] - b["detector, no pileup"]
            + b["detector jets"] - b["detector jets, no pileup"])


def on_the_fly_cost(b: dict[str, float], realizations: int) -> float:
    """Seconds pileup made by Pythia would have added to the block: its generation (at
    the rate measured in the block) instead of the library's draw."""
    per = b["made by Pythia"] / b["made by Pythia per"]
    return library_cost(b) - b["pileup"] + per * realizations


def measures(blocks):
    full = sum(sum(b[k] for k in FULL) for b, _ in blocks)
    detector = sum(sum(b[k] for k in DETECTOR_STEPS) for b, _ in blocks)
    shower = sum(sum(b[k] for k in SHOWER) for b, _ in blocks)
    library = sum(library_cost(b) for b, _ in blocks)
    fly = sum(on_the_fly_cost(b, r) for b, r in blocks)
    return {"library / full": library / full,
            "library / full with detector": library / (full + detector),
            "library / shower": library / shower,
            "on the fly / full": fly / full, "on the fly / library": fly / library}


def intervals(blocks, draws: int = 2000) -> dict[str, tuple[float, float]]:
    rng = random.Random(1)
    values: dict[str, list[float]] = {}
    for _ in range(draws):
        for k, v in measures(rng.choices(blocks, k=len(blocks))).items():
            values.setdefault(k, []).append(v)
    return {k: (sorted(v)[int(0.025 * draws)], sorted(v)[int(0.975 * draws) - 1])
            for k, v in values.items()}


def with_library_events(card, events: int):
    pileup = dataclasses.replace(card.pileup, library=dataclasses.replace(
        card.pileup.library, events=events))
    return dataclasses.replace(card, pileup=pileup, variations=tuple(
        dataclasses.replace(v, pileup=pileup) for v in card.variations))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1000,
                        help="hard events (x5 realizations; ~3 min)")
    parser.add_argument("--library-events", type=int, default=None,
                        help="minimum-bias events in the library (default: the preset's)")
    args = parser.parse_args()
    card = load_card(CARD).with_overrides(events=args.events)
    if args.library_events:
        card = with_library_events(card, args.library_events)
    print(f"card {CARD.name}: {args.events} hard events x {card.realizations_per_event} "
          f"simple-shower variations, {card.detector.preset} detector, <mu> = "
          f"{card.pileup.mu:g} ({card.pileup.mitigation}) from a library of "
          f"{card.pileup.library.events} minimum-bias events; {os.cpu_count()} cores; load "
          f"average {os.getloadavg()[0]:.2f} at start")
    blocks, summary, total_cpu = timed_run(TimedPipeline, card,
                                           warm=with_library_events(card, CHUNK_EVENTS))
    pipeline = TimedPipeline.last
    n = sum(r for _, r in blocks)
    total = {k: sum(b[k] for b, _ in blocks) for k in blocks[0][0]}
    per = {k: 1e3 * v / n for k, v in total.items()}
    full = sum(per[k] for k in FULL)
    library = 1e3 * sum(library_cost(b) for b, _ in blocks) / n
    fly = 1e3 * sum(on_the_fly_cost(b, r) for b, r in blocks) / n
    made = 1e3 * total["made by Pythia"] / total["made by Pythia per"]
    value, interval = measures(blocks), intervals(blocks)

    def ratio(name: str) -> str:
        lo, hi = interval[name]
        return f"{value[name]:.3f} (95 % interval {lo:.3f} ... {hi:.3f})"

    print(f"{n} realizations in {len(blocks)} blocks; set-up {summary.setup_seconds:.1f} s "
          f"(Pythia instances and the library of {pipeline.card.pileup.library.events} "
          f"minimum-bias events); {total_cpu:.0f} s CPU in all")
    print(f"full re-simulation        : {full:.3f} ms per realization (" + ", ".join(
        f"{k} {per[k]:.3f}" for k in FULL) + ")")
    with_detector = full + sum(per[k] for k in DETECTOR_STEPS)
    print(f"  with its detector       : {with_detector:.3f} ms per realization (detector "
          f"and detector-level jets without pileup)")
    print(f"the shower (Pythia)       : {per['re-simulation']:.3f} ms per realization")
    print(f"pileup from the library   : {library:.3f} ms per realization (overlay "
          f"{per['pileup']:.3f}, mitigation {per['mitigation']:.3f}, detector "
          f"{per['detector']:.3f} against {per['detector, no pileup']:.3f} without pileup, "
          f"detector-level jets {per['detector jets']:.3f} against "
          f"{per['detector jets, no pileup']:.3f})")
    print(f"  ratio to a full re-simulation : {ratio('library / full')}")
    print(f"  ... with its detector         : {ratio('library / full with detector')}")
    print(f"  ratio to the shower           : {ratio('library / shower')}   target < 1")
    print(f"pileup made by Pythia     : {fly:.3f} ms per realization (its minimum-bias "
          f"events {made:.3f} ms per realization, {ON_THE_FLY_PER_BLOCK} realizations per "
          "block)")
    print(f"  ratio to a full re-simulation : {ratio('on the fly / full')}")
    print(f"  ratio to the library          : {ratio('on the fly / library')}")


if __name__ == "__main__":
    main()

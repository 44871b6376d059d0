"""What resim adds to Pythia: realizations per second of ``resim generate`` against a bare
Pythia ``next()`` loop with the same settings, measured side by side in one run.

    python benchmarks/generator_overhead.py [--events 2000]

Target: resim >= 0.90 of bare Pythia with the simple shower (hand-over, clustering,
matching and writing cost at most a tenth).

What is compared, on the card ``benchmarks/cards/overhead.toml`` (boosted tops, five
simple-shower variations):

- bare: for each variation, one Pythia with the upstream's settings (process, beams,
  decays, ``[pythia]``) plus the variation's, and ``next()`` called events x realizations
  times. It makes its own hard process every time and hands nothing over. Before the
  first realization of each hard event it is re-seeded with the seed resim's upstream
  uses for that event, so it makes the same hard process and the two sides shower the
  same hard processes (a realization takes 2-30 ms, mostly by what its hard process is:
  without this, the sides' different hard events were a large part of the spread).
  Those re-seeds are timed and taken out of its time;
- resim: one ``resim.generate.generate`` run of the card into a temporary file. Its time
  includes everything resim adds: making and freezing each hard process once, handing it
  over (a Python ``LHAup`` and a re-seed per realization), ``nextBatch``'s columnar copy
  of every event, visible final state, truth objects, clustering, matching and writing.

The two are interleaved block by block: after each of resim's blocks (~5 s,
~500 realizations), its progress callback runs bare Pythia for the same hard
events' worth of realizations, and that time is taken out of resim's. On this shared
machine the speed of a core drifts by tens of per cent over tens of seconds, and a
comparison of separate runs measures the drift as much as resim; side by side in
seconds-long pairs the drift cancels. What is left is the spread of Pythia's own time
between different showers of the same hard processes, and what remains of the drift,
which a long run averages out: the 95 % interval printed comes from resampling the
block pairs.

Initialising the Pythia instances is excluded on both sides (and printed), after a short
warm-up of each side (first calls in a process: imports, FastJet's banner). What
``generate`` does once per run whatever its length (preparing the output, building the
data set at the end) is printed apart.

Then, on the same hard events: what the hand-over and ``nextBatch``'s columnar copy cost
inside the re-simulation step, and the cost of one realization made by a
hadronization-only variation (re-hadronizing a frozen parton-level event) against a full
re-simulation.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import awkward as ak

import resim.generate as resim_generate
from resim.card import Card, load_card
from resim.generate import Pipeline, RunSummary, generate
from resim.generators.handoff import Job
from resim.generators.hard_process import HardEvent, HardProcessSource
from resim.generators.pythia_setup import configure, initialize, new_pythia, stdout_to
from resim.generators.resimulate import EVENTS_PER_CALL, Realizations
from resim.generators.seeds import derive_seed
from resim.progress import Progress

CARD = Path(__file__).parent / "cards" / "overhead.toml"


class Clock:
    """Wall-clock and CPU seconds of a block of code."""

    def __enter__(self) -> Clock:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu


class BarePythia:
    """The card's realizations made the plain way: for each variation one Pythia with the
    upstream's settings plus the variation's, ``next()`` in a loop. Initialised once."""

    def __init__(self, card: Card):
        upstream = [s for s in HardProcessSource._settings(card) if "Level:all" not in s.line]
        self.seed = card.run.seed
        self.reseed_seconds = 0.0  # wall time of every re-seed so far, kept out of run()'s
        self.runs = []
        for v in card.variations:
            pythia = new_pythia()
            configure(pythia, [*upstream, *v.settings], card.path)
            initialize(pythia, card.path, v.name, "bare Pythia")
            self.runs.append((pythia, v.realizations))

    def run(self, first: int, events: int) -> tuple[float, float, int]:
        """(wall s, CPU s, realizations) for the realizations of hard events [first,
        first + events): the same hard processes as resim's (the upstream's seed for each,
        first attempt), the re-seeds' own time taken out."""
        n = sum(events * r for _, r in self.runs)
        seeds = [derive_seed(self.seed, "hard", i, 0) for i in range(first, first + events)]
        reseed_wall = reseed_cpu = 0.0
        with Clock() as clock:
            for pythia, realizations in self.runs:
                for seed in seeds:
                    wall, cpu = time.perf_counter(), time.process_time()
                    pythia.rndm.init(seed)
                    reseed_wall += time.perf_counter() - wall
                    reseed_cpu += time.process_time() - cpu
                    for _ in range(realizations):
                        pythia.next()
        self.reseed_seconds += reseed_wall
        return clock.wall - reseed_wall, clock.cpu - reseed_cpu, n


class Pairs(Progress):
    """resim's progress bar, made to run bare Pythia after each of resim's blocks.

    ``generate`` calls ``update`` once per finished block (after its commit, if any):
    the time since the previous call is resim's block, and bare Pythia then makes the same
    hard events' worth of realizations. One (resim, bare) pair per block."""

    def __init__(self, bare: BarePythia, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.bare = bare
        self.pairs: list[tuple[float, float, float, float, int]] = []
        self.events = 0  # hard events done so far: blocks come in order
        self._mark()

    def _mark(self) -> None:
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def update(self, events: int, realizations: int, jets: int, failed: int) -> None:
        super().update(events, realizations, jets, failed)
        wall, cpu = time.perf_counter() - self._wall, time.process_time() - self._cpu
        bare_wall, bare_cpu, n = self.bare.run(self.events, events)
        self.events += events
        self.pairs.append((wall, cpu, bare_wall, bare_cpu, n))
        self._mark()


def side_by_side(card: Card, bare: BarePythia, directory: Path) -> tuple[Pairs, RunSummary]:
    """One ``generate`` run of ``card``, bare Pythia interleaved block by block."""
    bars: list[Pairs] = []

    def make_bar(*args, **kwargs) -> Pairs:
        bars.append(Pairs(bare, *args, **kwargs))
        return bars[-1]

    out = directory / f"overhead-{time.monotonic_ns()}.h5"
    # generate commits within commit_seconds of wall time of the last commit, bare
    # Pythia's blocks included: doubled, commits come after as much of resim's own work
    # as in a real run.
    run = dataclasses.replace(card.run, output=out, commit_seconds=2 * card.run.commit_seconds)
    original = resim_generate.Progress
    resim_generate.Progress = make_bar
    try:
        summary = generate(dataclasses.replace(card, run=run), progress=False)
    finally:
        resim_generate.Progress = original
    return bars[0], summary


def interval(pairs: list[tuple[float, float, float, float, int]],
             draws: int = 2000) -> tuple[float, float]:
    """95 % interval of the wall-clock ratio sum(bare) / sum(resim) from resampling the
    block pairs."""
    rng = random.Random(1)
    ratios = []
    for _ in range(draws):
        sample = rng.choices(pairs, k=len(pairs))
        ratios.append(sum(p[2] for p in sample) / sum(p[0] for p in sample))
    ratios.sort()
    return ratios[int(0.025 * draws)], ratios[int(0.975 * draws) - 1]


class FromBuffers:
    """Times ``awkward.from_buffers``, which ``nextBatch`` calls once per call to wrap its
    buffers: a fixed cost per call (~2 ms), apart from the per-event copy."""

    def __init__(self) -> None:
        self.seconds, self.calls = 0.0, 0

    def __enter__(self) -> FromBuffers:
        self._original = ak.from_buffers

        def timed(*args, **kwargs):
            start = time.process_time()
            try:
                return self._original(*args, **kwargs)
            finally:
                self.seconds += time.process_time() - start
                self.calls += 1

        ak.from_buffers = timed
        return self

    def __exit__(self, *exc) -> None:
        ak.from_buffers = self._original


def pythia_side_costs(card: Card, events: int, rounds: int) -> dict[str, float]:
    """CPU seconds per realization, on the same hard events for every measurement:

    - ``full``: a full re-simulation (``nextBatch`` of a downstream Pythia);
    - ``hadronization``: a hadronization-only realization, with the shared parton-level
      event amortised over its 5 realizations; ``rehadronize``: the re-hadronization alone;
    - ``hand-over``: the feeder's ``setEvent`` alone (re-seed, copy the frozen event in);
    - ``copy``: what ``nextBatch``'s columnar copy costs per event over ``next()``, from
      the same jobs (same seeds, so identical events) run both ways; ``copy per call``:
      its fixed cost per call, which resim's blocks spread over many events.

    The work is done in slices of 10 hard events (under a second each), the measurements
    of a slice one after the other in an order that alternates, so that the drift of the
    machine's speed cancels; the copy, small against Pythia's time, is measured in pairs
    of 5 events, and ``nextBatch``'s fixed cost per call apart.
    """
    text = card.text.split("[variations.")[0] + (
        "[variations.nominal]\nrealizations = 5\n"
        "[variations.hadronization]\nstage = \"hadronization\"\nrealizations = 5\n")
    path = Path(tempfile.mkdtemp()) / "hadronization.toml"
    path.write_text(text)
    pipeline = Pipeline(load_card(path))
    hard = [pipeline.source.event(i) for i in range(events)]
    full_stage, had_stage = pipeline.resimulator.stages
    feeder = full_stage.feeder
    cpu: dict[str, float] = {}

    def timed(name: str, work) -> Any:
        with Clock() as clock:
            result = work()
        cpu[name] = cpu.get(name, 0.0) + clock.cpu
        return result

    def one_by_one(jobs: list[tuple[Job, HardEvent, None]]) -> None:
        for job, h, _ in jobs:
            feeder.put(job, h)
            full_stage.pythia.next()
        feeder.served.clear()

    def hand_over(jobs: list[tuple[Job, HardEvent, None]]) -> None:
        for job, h, _ in jobs:
            feeder.put(job, h)
            feeder.setEvent()
        feeder.served.clear()

    slices = 0
    wrapping = FromBuffers()
    for k in range(rounds):
        for first in range(0, len(hard), 10):
            part = hard[first:first + 10]
            jobs = [(Job(h.index, 0, r, k, 1 + 7 * h.index + r + 1000 * k), h, None)
                    for h in part for r in range(5)]
            saved = timed("partons",
                          lambda p=part: pipeline.resimulator._freeze_partons(p, Realizations()))
            had = [(dataclasses.replace(job, variation=1), h, saved[h.index])
                   for job, h, _ in jobs]
            steps = [("rehadronize", lambda j=had: had_stage.run(j)),
                     ("full", lambda j=jobs: full_stage.run(j)),
                     ("hand-over", lambda j=jobs: hand_over(j))]
            for name, work in steps if slices % 2 == 0 else reversed(steps):
                timed(name, work)
            for i in range(0, len(jobs), 5):
                pair = [("one by one", lambda j=jobs[i:i + 5]: one_by_one(j)),
                        ("batched", lambda j=jobs[i:i + 5]: full_stage.run(j))]
                with wrapping:
                    for name, work in pair if (slices + i // 5) % 2 == 0 else reversed(pair):
                        timed(name, work)
            slices += 1
    n = 5 * len(hard) * rounds
    per_call = wrapping.seconds / wrapping.calls
    copy = (cpu["batched"] - wrapping.seconds - cpu["one by one"]) / n
    return {"full": cpu["full"] / n, "rehadronize": cpu["rehadronize"] / n,
            "hadronization": (cpu["partons"] + cpu["rehadronize"]) / n,
            "hand-over": cpu["hand-over"] / n,
            "copy": copy, "copy per call": per_call}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=2000,
                        help="hard events of the resim run (x5 realizations; ~3 min)")
    parser.add_argument("--hadronization-events", type=int, default=100)
    parser.add_argument("--hadronization-rounds", type=int, default=4)
    parser.add_argument("--constituent-pt-min", type=float, metavar="GEV",
                        help="cluster only visible particles above this pT (overrides the "
                             "card's [jets] constituent_pt_min, 0.5 GeV as in the shipped "
                             "cards): shows what the choice of jet inputs costs")
    args = parser.parse_args()
    card = load_card(CARD).with_overrides(events=args.events)
    if args.constituent_pt_min is not None:
        card = dataclasses.replace(card, jets=dataclasses.replace(
            card.jets, constituent_pt_min=args.constituent_pt_min))
    print(f"card {CARD.name}: {args.events} hard events x {card.realizations_per_event} "
          f"simple-shower variations, resim and bare Pythia interleaved block by block; "
          f"clustering visible particles with pT >= {card.jets.constituent_pt_min} GeV; "
          f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f} at start")
    with tempfile.TemporaryDirectory() as tmp:
        with stdout_to(Path(tmp) / "pythia.log"):
            bare = BarePythia(card)
            bare.run(0, 2)  # warm-up, not counted (first calls in a process)
            bare.reseed_seconds = 0.0
        generate(card.with_overrides(events=2, output=Path(tmp) / "warm-up.h5"),
                 progress=False)
        with Clock() as run:
            bar, summary = side_by_side(card, bare, Path(tmp))
    pairs = bar.pairs
    n = sum(p[4] for p in pairs)
    rw, rc, bw, bc = (sum(p[k] for p in pairs) for k in range(4))
    # What generate does outside its blocks: set-up (not counted) and once-per-run work.
    once = run.wall - summary.setup_seconds - rw - bw - bare.reseed_seconds
    lo, hi = interval(pairs)
    block_ratios = sorted(p[2] / p[0] for p in pairs)
    print(f"bare Pythia next() loop : {n / bw:7.1f} realizations/s wall, {n / bc:7.1f}/s CPU "
          f"({n} realizations)")
    print(f"resim generate          : {n / rw:7.1f} realizations/s wall, {n / rc:7.1f}/s CPU "
          f"({len(pairs)} blocks; set-up {summary.setup_seconds:.1f} s and once-per-run work "
          f"{once:.1f} s not included)")
    print(f"ratio resim / bare      : {bw / rw:.3f} wall (95 % interval {lo:.3f} ... {hi:.3f}),"
          f" {bc / rc:.3f} CPU; with the once-per-run work {bw / (rw + once):.3f} wall   "
          f"target >= 0.90")
    print(f"  per block pair (wall): median {statistics.median(block_ratios):.3f}, range "
          f"{block_ratios[0]:.3f} ... {block_ratios[-1]:.3f}")
    per = {k: 1e3 * v / n for k, v in summary.timings.items()}
    print("resim's wall time per realization, by step: " + ", ".join(
        f"{k} {v:.3f} ms" for k, v in per.items()) + f"; bare Pythia {1e3 * bw / n:.3f} ms")
    with tempfile.TemporaryDirectory() as tmp, stdout_to(Path(tmp) / "p.log"):
        cost = pythia_side_costs(card, args.hadronization_events, args.hadronization_rounds)
    # Each variation's nextBatch call in a block takes the block's hard events (x its
    # realizations; one each on this card), at most EVENTS_PER_CALL.
    per_call = min(EVENTS_PER_CALL, n / len(pairs) / card.realizations_per_event)
    cost["copy"] += cost["copy per call"] / per_call
    print(f"inside re-simulation (CPU per realization): hand-over {1e3 * cost['hand-over']:.3f}"
          f" ms (re-seed and copy the frozen event in), nextBatch's columnar copy "
          f"{1e3 * cost['copy']:.3f} ms over next() in calls of {per_call:.0f} events "
          f"({1e3 * cost['copy per call']:.1f} ms per call of it); a full re-simulation "
          f"{1e3 * cost['full']:.2f} ms")
    # Composed from pieces timed inside resim or measured on identical work, so free of
    # the spread of Pythia's own time between different events.
    added = {"hand-over": cost["hand-over"], "nextBatch copy": cost["copy"],
             **{k: v / 1e3 for k, v in per.items() if k != "re-simulation"}}
    bare_s, extra = bw / n, sum(added.values())
    print("what resim adds per realization: " + ", ".join(
        f"{k} {1e3 * v:.3f} ms" for k, v in added.items()) + f"; in all {1e3 * extra:.2f} ms"
        f" = {100 * extra / bare_s:.1f}% of bare Pythia's {1e3 * bare_s:.2f} ms -> ratio "
        f"{bare_s / (bare_s + extra):.3f}")
    full = cost["full"]
    print(f"per realization (CPU): full re-simulation {1e3 * full:.2f} ms; hadronization-only "
          f"{1e3 * cost['hadronization']:.2f} ms with the shared parton shower amortised over "
          f"5 realizations ({full / cost['hadronization']:.1f}x cheaper), "
          f"{1e3 * cost['rehadronize']:.2f} ms for the re-hadronization alone "
          f"({full / cost['rehadronize']:.1f}x)")
    print(f"load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()

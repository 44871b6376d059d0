"""What resim adds to Pythia: realizations per second of ``resim generate`` against a bare
Pythia ``next()`` loop with the same settings, measured side by side in one run.

    python benchmarks/generator_overhead.py [--events 200] [--chunks 4]

Target: resim >= 0.90 of bare Pythia with the simple shower (hand-over, clustering,
matching and writing cost at most a tenth).

What is compared, on the card ``benchmarks/cards/overhead.toml`` (boosted tops, five
simple-shower variations):

- bare: for each variation, one Pythia with the upstream's settings (process, beams,
  decays, ``[pythia]``) plus the variation's, and ``next()`` called events x realizations
  times. It makes its own hard process every time and hands nothing over;
- resim: ``resim.generate.generate`` on the same card, events and realizations, into a
  temporary file (a new run seed for each chunk, so new hard events). Its time includes
  everything resim adds: making and freezing each hard process once, handing it over (a
  Python ``LHAup`` and a re-seed per realization), ``nextBatch``'s columnar copy of every
  event, visible final state, truth objects, clustering, matching and writing.

Initialising the Pythia instances is excluded on both sides (and printed), after a short
warm-up of each side (first calls in a process: imports, FastJet's banner). What
``generate`` does once per run whatever its length (preparing the output, building the
data set) is included; as every chunk is a run of its own, that is more than a long run
pays, so the ratio without it is printed too.

The machine may be shared, and the speed of a core drifts by tens of per cent with the
load: bare and resim alternate in short chunks and their totals are compared; rates are
given in wall-clock and in CPU time of this process, with the spread of the per-chunk
ratios and the load average at start and end.

Then, on the same hard events: what the hand-over and ``nextBatch``'s columnar copy cost
inside the re-simulation step, and the cost of one realization made by a
hadronization-only variation (re-hadronizing a frozen parton-level event) against a full
re-simulation.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path

from resim.card import Card, load_card
from resim.generate import Pipeline, generate
from resim.generators.handoff import Job
from resim.generators.hard_process import HardEvent, HardProcessSource
from resim.generators.pythia_setup import configure, initialize, new_pythia, stdout_to
from resim.generators.resimulate import Realizations, Resimulator
from resim.generators.seeds import derive_seed

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
        self.runs = []
        for v in card.variations:
            pythia = new_pythia()
            configure(pythia, [*upstream, *v.settings], card.path)
            initialize(pythia, card.path, v.name, "bare Pythia")
            self.runs.append((pythia, v.realizations))

    def run(self, events: int) -> tuple[float, float, int]:
        """(wall s, CPU s, realizations) for ``events`` hard events' worth of realizations."""
        n = sum(events * r for _, r in self.runs)
        with Clock() as clock:
            for pythia, realizations in self.runs:
                for _ in range(events * realizations):
                    pythia.next()
        return clock.wall, clock.cpu, n


class SameEvents:
    """The Pythia work of a resim run alone: each of its realizations made again, from the
    same frozen hard event with the same derived seed (so the very same event), by a
    downstream Pythia with the same settings calling ``next()`` and nothing else. The
    hand-over into it, timed on its own, is taken out. Comparing this with the run shows
    what resim adds without the event-to-event spread of Pythia's own time (a few per cent
    even over thousands of events) that a comparison with bare Pythia carries."""

    def __init__(self, card: Card):
        if any(v.stage != "shower" for v in card.variations):
            raise ValueError("SameEvents handles shower variations only")
        self.resimulator = Resimulator(card, HardProcessSource(card).beams())

    def run(self, card: Card) -> tuple[float, float, int]:
        """(wall s, CPU s, realizations) of re-making the realizations of ``card``'s run."""
        source = HardProcessSource(card)  # the run's hard events: not timed, as in resim
        hard = [source.event(i) for i in range(card.run.events)]
        jobs = [(stage, Job(h.index, k, r, 0, derive_seed(card.run.seed, v.stage, v.name,
                                                          h.index, r, 0)), h)
                for k, (v, stage) in enumerate(zip(card.variations, self.resimulator.stages,
                                                   strict=True))
                for h in hard for r in range(v.realizations)]  # as Resimulator._seed
        with Clock() as handover:
            for stage, job, h in jobs:
                stage.feeder.put(job, h)
                stage.feeder.setEvent()
        with Clock() as pythia:
            for stage, job, h in jobs:
                stage.feeder.put(job, h)
                stage.pythia.next()
        for stage in self.resimulator.stages:
            stage.feeder.served.clear()
        return pythia.wall - handover.wall, pythia.cpu - handover.cpu, len(jobs)


def resim(card: Card, directory: Path) -> tuple[float, float, int, dict]:
    """(wall s, CPU s, realizations, per-step seconds) of ``resim generate``, set-up excluded."""
    out = directory / f"overhead-{time.monotonic_ns()}.h5"
    with Clock() as clock:
        summary = generate(card.with_overrides(output=out), progress=False)
    n = card.run.events * card.realizations_per_event
    wall = clock.wall - summary.setup_seconds
    # What the steps of the blocks do not cover: preparing the output, planning, building
    # the data set over the segments at the end (once per run, whatever its size).
    once = wall - sum(summary.timings.values())
    return (wall, clock.cpu - summary.setup_cpu_seconds, n,
            {**summary.timings, "once per run": once, "set-up": summary.setup_seconds})


def pythia_side_costs(card: Card, events: int, rounds: int) -> dict[str, float]:
    """CPU seconds per realization, on the same hard events for every measurement:

    - ``full``: a full re-simulation (``nextBatch`` of a downstream Pythia);
    - ``hadronization``: a hadronization-only realization, with the shared parton-level
      event amortised over its 5 realizations; ``rehadronize``: the re-hadronization alone;
    - ``hand-over``: the feeder's ``setEvent`` alone (re-seed, copy the frozen event in);
    - ``copy``: what ``nextBatch``'s columnar copy of every event costs over ``next()``,
      from the same jobs (same seeds, so identical events) run both ways.
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
    n = 5 * len(hard)
    out: dict[str, list[float]] = {}

    def note(name: str, seconds: float, count: int = n) -> None:
        out.setdefault(name, []).append(seconds / count)

    def jobs(variation: int, k: int) -> list[tuple[Job, HardEvent]]:
        return [(Job(h.index, variation, r, k, 1 + 7 * h.index + r + 1000 * k), h)
                for h in hard for r in range(5)]

    for k in range(rounds):  # alternate, so all see the same machine load
        with Clock() as partons:
            saved = pipeline.resimulator._freeze_partons(hard, Realizations())
        with Clock() as rehadronize:
            had_stage.run([(job, h, saved[h.index]) for job, h in jobs(1, k)])
        with Clock() as shower:
            full_stage.run([(job, h, None) for job, h in jobs(0, k)])
        note("full", shower.cpu)
        note("hadronization", partons.cpu + rehadronize.cpu)
        note("rehadronize", rehadronize.cpu)
        with Clock() as handover:
            for job, h in jobs(0, k):
                feeder.put(job, h)
                feeder.setEvent()
        note("hand-over", handover.cpu)
        same = jobs(0, k)[: len(hard)]
        with Clock() as one_by_one:
            for job, h in same:
                feeder.put(job, h)
                full_stage.pythia.next()
        with Clock() as batched:
            full_stage.run([(job, h, None) for job, h in same])
        note("copy", batched.cpu - one_by_one.cpu, len(same))
        feeder.served.clear()
    return {name: statistics.median(values) for name, values in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # A chunk of 200 events is ~1000 realizations, ~10 s: one commit interval of a real
    # run, so each resim run pays its per-commit costs (fsync, journal) as a long run does.
    parser.add_argument("--events", type=int, default=200, help="hard events per chunk")
    parser.add_argument("--chunks", type=int, default=4,
                        help="alternations of bare and resim (each a new seed)")
    parser.add_argument("--hadronization-events", type=int, default=40)
    parser.add_argument("--hadronization-rounds", type=int, default=5)
    parser.add_argument("--constituent-pt-min", type=float, metavar="GEV",
                        help="cluster only visible particles above this pT (overrides the "
                             "card's [jets] constituent_pt_min, 0.5 GeV as in the shipped "
                             "cards): shows what the choice of jet inputs costs")
    args = parser.parse_args()
    card = load_card(CARD).with_overrides(events=args.events)
    if args.constituent_pt_min is not None:
        card = dataclasses.replace(card, jets=dataclasses.replace(
            card.jets, constituent_pt_min=args.constituent_pt_min))
    print(f"card {CARD.name}: {args.chunks} chunks of {args.events} hard events x "
          f"{card.realizations_per_event} simple-shower variations, bare and resim "
          f"alternating; clustering visible particles with pT >= "
          f"{card.jets.constituent_pt_min} GeV; {os.cpu_count()} cores; load average "
          f"{os.getloadavg()[0]:.2f} at start")
    bare_wall, bare_cpu, ours_wall, ours_cpu, steps = [], [], [], [], []
    same_wall, same_cpu = [], []
    with tempfile.TemporaryDirectory() as tmp:
        with stdout_to(Path(tmp) / "pythia.log"):
            bare = BarePythia(card)
            bare.run(2)  # warm-up, not counted (first calls in a process)
            same = SameEvents(card)
        resim(card.with_overrides(events=2), Path(tmp))
        for chunk in range(args.chunks):
            # Short alternating chunks: both sides see the same machine load on average
            # (on this shared machine the speed of a core drifts by tens of per cent).
            with stdout_to(Path(tmp) / "pythia.log"):
                wall, cpu, n = bare.run(args.events)
            bare_wall.append(wall)
            bare_cpu.append(cpu)
            seeded = card.with_overrides(seed=card.run.seed + 1 + chunk)  # new hard events
            wall, cpu, n, timings = resim(seeded, Path(tmp))
            ours_wall.append(wall)
            ours_cpu.append(cpu)
            steps.append(timings)
            with stdout_to(Path(tmp) / "pythia.log"):
                wall, cpu, _ = same.run(seeded)
            same_wall.append(wall)
            same_cpu.append(cpu)
    total = n * args.chunks
    bw, bc, rw, rc = sum(bare_wall), sum(bare_cpu), sum(ours_wall), sum(ours_cpu)
    once = sum(st["once per run"] for st in steps)
    print(f"bare Pythia next() loop : {total / bw:7.1f} realizations/s wall, "
          f"{total / bc:7.1f}/s CPU  ({total} realizations)")
    print(f"resim generate          : {total / rw:7.1f} realizations/s wall, "
          f"{total / rc:7.1f}/s CPU  ({args.chunks} runs; set-up "
          f"{statistics.median(st['set-up'] for st in steps):.1f} s each, not included)")
    chunk_ratios = sorted(b / o for b, o in zip(bare_wall, ours_wall, strict=True))
    print(f"ratio resim / bare      : {bw / rw:.3f} wall, {bc / rc:.3f} CPU; without resim's "
          f"once-per-run work (a long run) {bw / (rw - once):.3f} wall   target >= 0.90")
    print(f"  per chunk (wall): median {statistics.median(chunk_ratios):.3f}, range "
          f"{chunk_ratios[0]:.3f} ... {chunk_ratios[-1]:.3f}")
    sw, sc = sum(same_wall), sum(same_cpu)
    same_ratios = sorted(a / o for a, o in zip(same_wall, ours_wall, strict=True))
    print(f"same events, Pythia alone: {total / sw:7.1f} realizations/s wall, {total / sc:7.1f}/s "
          f"CPU; ratio resim / Pythia alone {sw / rw:.3f} wall, {sc / rc:.3f} CPU; a long run "
          f"{sw / (rw - once):.3f} wall (per chunk: median "
          f"{statistics.median(same_ratios):.3f}, range {same_ratios[0]:.3f} ... "
          f"{same_ratios[-1]:.3f})")
    per = {k: 1e3 * sum(st[k] for st in steps) / total for k in steps[0] if k != "set-up"}
    print("resim's wall time per realization, by step: " + ", ".join(
        f"{k} {v:.3f} ms" for k, v in per.items()) + f"; bare Pythia {1e3 * bw / total:.3f} ms")
    with tempfile.TemporaryDirectory() as tmp, stdout_to(Path(tmp) / "p.log"):
        cost = pythia_side_costs(card, args.hadronization_events, args.hadronization_rounds)
    print(f"inside re-simulation (CPU per realization): hand-over {1e3 * cost['hand-over']:.3f}"
          f" ms (re-seed and copy the frozen event in), nextBatch's columnar copy "
          f"{1e3 * cost['copy']:.3f} ms over next(); a full re-simulation "
          f"{1e3 * cost['full']:.2f} ms")
    # Composed from pieces measured on identical work or timed inside resim, so free of
    # the spread of Pythia's own time between different events.
    added = {"hand-over": cost["hand-over"], "nextBatch copy": cost["copy"],
             **{k: v / 1e3 for k, v in per.items() if k not in ("re-simulation",
                                                                 "once per run")}}
    bare_s, extra = bw / total, sum(added.values())
    print("what resim adds per realization (once-per-run work aside): " + ", ".join(
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

"""What resim adds to Pythia: realizations per second of ``resim generate`` against a bare
Pythia ``next()`` loop with the same settings, measured side by side in one run.

    python benchmarks/generator_overhead.py [--events 200] [--rounds 3]

Target: resim >= 0.90 of bare Pythia with the simple shower (hand-over, clustering,
matching and writing cost at most a tenth).

What is compared, on the card ``benchmarks/cards/overhead.toml`` (boosted tops, five
simple-shower variations):

- bare: for each variation, one Pythia with the upstream's settings (process, beams, decays,
  ``[pythia]``) plus the variation's, and ``next()`` called events x realizations times.
  It makes its own hard process every time and hands nothing over;
- resim: ``resim.generate.generate`` on the same card, events and realizations, into a
  temporary file. Its time includes everything resim adds: making and freezing each hard
  process once, handing it over (a Python ``LHAup`` and a re-seed per realization),
  ``nextBatch``'s columnar copy of every event, visible final state, truth objects,
  clustering, matching and writing.

Start-up (initialising the Pythia instances) is excluded on both sides and printed, after
a short warm-up run of each side (first calls in a process: imports, FastJet's banner).
What ``resim generate`` does once per run whatever its length (preparing the output,
building the data set at the end) is included, and printed. The machine may be shared:
bare and resim rounds alternate, medians are reported, and rates are given both in
wall-clock time and in CPU time of this process (which other processes on the machine
disturb less). The load average is printed at start and end.

Then, on the same hard events: what the hand-over and ``nextBatch``'s columnar copy cost
inside the re-simulation step, and the cost of one realization made by a
hadronization-only variation (re-hadronizing a frozen parton-level event) against a full
re-simulation.
"""

from __future__ import annotations

import argparse
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
from resim.generators.resimulate import Realizations

CARD = Path(__file__).parent / "cards" / "overhead.toml"


class Clock:
    """Wall-clock and CPU seconds of a block of code."""

    def __enter__(self) -> Clock:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu


def bare_pythia(card: Card) -> tuple[float, float, int]:
    """(wall s, CPU s, realizations) for the card's realizations made the plain way."""
    upstream = [s for s in HardProcessSource._settings(card) if "Level:all" not in s.line]
    wall = cpu = 0.0
    n = 0
    for v in card.variations:
        pythia = new_pythia()
        configure(pythia, [*upstream, *v.settings], card.path)
        initialize(pythia, card.path, v.name, "bare Pythia")
        count = card.run.events * v.realizations
        with Clock() as clock:
            for _ in range(count):
                pythia.next()
        wall, cpu, n = wall + clock.wall, cpu + clock.cpu, n + count
    return wall, cpu, n


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


def _rates(n: int, seconds: list[float]) -> str:
    return ", ".join(f"{n / s:.1f}" for s in seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hadronization-events", type=int, default=60)
    args = parser.parse_args()
    card = load_card(CARD).with_overrides(events=args.events)
    print(f"card {CARD.name}: {args.events} hard events x {card.realizations_per_event} "
          f"simple-shower variations; {os.cpu_count()} cores; load average "
          f"{os.getloadavg()[0]:.2f} at start")
    bare_wall, bare_cpu, ours_wall, ours_cpu, steps = [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        with stdout_to(Path(tmp) / "pythia.log"):
            # Warm-up, not counted: first calls in a process (imports, FastJet's banner).
            bare_pythia(card.with_overrides(events=5))
        resim(card.with_overrides(events=5), Path(tmp))
        for _ in range(args.rounds):  # alternate, so both see the same machine load
            with stdout_to(Path(tmp) / "pythia.log"):
                wall, cpu, n = bare_pythia(card)
            bare_wall.append(wall)
            bare_cpu.append(cpu)
            wall, cpu, n, timings = resim(card, Path(tmp))
            ours_wall.append(wall)
            ours_cpu.append(cpu)
            steps.append(timings)
    med = statistics.median
    print(f"bare Pythia next() loop : {n / med(bare_wall):7.1f} realizations/s wall "
          f"(rounds {_rates(n, bare_wall)}), {n / med(bare_cpu):7.1f}/s CPU "
          f"(rounds {_rates(n, bare_cpu)})")
    print(f"resim generate          : {n / med(ours_wall):7.1f} realizations/s wall "
          f"(rounds {_rates(n, ours_wall)}), {n / med(ours_cpu):7.1f}/s CPU "
          f"(rounds {_rates(n, ours_cpu)}); set-up {med(s['set-up'] for s in steps):.1f} s "
          "wall, not included")
    wall_ratio = med([b / o for b, o in zip(bare_wall, ours_wall, strict=True)])
    cpu_ratio = med([b / o for b, o in zip(bare_cpu, ours_cpu, strict=True)])
    print(f"ratio resim / bare      : {med(bare_wall) / med(ours_wall):.3f} wall "
          f"(per round, median {wall_ratio:.3f}), {med(bare_cpu) / med(ours_cpu):.3f} CPU "
          f"(per round, median {cpu_ratio:.3f})   target >= 0.90")
    steady = [w - st["once per run"] for w, st in zip(ours_wall, steps, strict=True)]
    print(f"ratio without resim's once-per-run work (a long run's rate): "
          f"{med(bare_wall) / med(steady):.3f} wall (per round, median "
          f"{med([b / o for b, o in zip(bare_wall, steady, strict=True)]):.3f})")
    step_names = [k for k in steps[0] if k != "set-up"]
    per = {k: 1e3 * med(s.get(k, 0.0) for s in steps) / n for k in step_names}
    print("resim's wall time per realization, by step (median of rounds): " + ", ".join(
        f"{k} {v:.3f} ms" for k, v in per.items()) + f"; bare Pythia "
        f"{1e3 * med(bare_wall) / n:.3f} ms")
    with tempfile.TemporaryDirectory() as tmp, stdout_to(Path(tmp) / "p.log"):
        cost = pythia_side_costs(card, min(args.events, args.hadronization_events),
                                 args.rounds)
    print(f"inside re-simulation (CPU per realization): hand-over {1e3 * cost['hand-over']:.3f}"
          f" ms (re-seed and copy the frozen event in), nextBatch's columnar copy "
          f"{1e3 * cost['copy']:.3f} ms over next(); a full re-simulation "
          f"{1e3 * cost['full']:.2f} ms")
    full = cost["full"]
    print(f"per realization (CPU): full re-simulation {1e3 * full:.2f} ms; hadronization-only "
          f"{1e3 * cost['hadronization']:.2f} ms with the shared parton shower amortised over "
          f"5 realizations ({full / cost['hadronization']:.1f}x cheaper), "
          f"{1e3 * cost['rehadronize']:.2f} ms for the re-hadronization alone "
          f"({full / cost['rehadronize']:.1f}x)")
    print(f"load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()

"""What resim adds to Pythia: realizations per second of ``resim generate`` against a bare
Pythia ``next()`` loop with the same settings, measured side by side in one run.

    python benchmarks/generator_overhead.py [--events 200] [--rounds 2]

Target: resim >= 0.90 of bare Pythia with the simple shower (hand-over, clustering,
matching and writing cost at most a tenth). Also prints where resim's time goes and the
cost of a hadronization-only realization against a full one. Start-up (initialising the
Pythia instances) is excluded from both rates and printed separately.
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
from resim.generators.hard_process import HardProcessSource
from resim.generators.pythia_setup import configure, initialize, new_pythia, stdout_to
from resim.generators.resimulate import Resimulator

CARD = Path(__file__).parent / "cards" / "overhead.toml"


def bare_pythia_seconds(card: Card) -> tuple[float, int]:
    """Seconds for the card's realizations made the plain way: for each variation, one Pythia
    with the upstream's process settings plus the variation's, ``next()`` in a loop."""
    upstream = [s for s in HardProcessSource._settings(card) if "Level:all" not in s.line]
    total, n = 0.0, 0
    for v in card.variations:
        pythia = new_pythia()
        configure(pythia, [*upstream, *v.settings], card.path)
        initialize(pythia, card.path, v.name, "bare Pythia")
        count = card.run.events * v.realizations
        start = time.perf_counter()
        for _ in range(count):
            pythia.next()
        total += time.perf_counter() - start
        n += count
    return total, n


def resim_seconds(card: Card, directory: Path) -> tuple[float, float, dict[str, float], int]:
    out = directory / f"overhead-{time.monotonic_ns()}.h5"
    summary = generate(card.with_overrides(output=out), progress=False)
    n = card.run.events * card.realizations_per_event
    return summary.seconds - summary.setup_seconds, summary.setup_seconds, summary.timings, n


def hadronization_cost(card: Card, events: int) -> tuple[float, float, float]:
    """Seconds per realization: full re-simulation, hadronization-only (with the shared
    parton-level event amortised over the realizations) and hadronization alone."""
    text = card.text.split("[variations.")[0] + (
        "[variations.nominal]\nrealizations = 5\n"
        "[variations.hadronization]\nstage = \"hadronization\"\nrealizations = 5\n")
    path = Path(tempfile.mkdtemp()) / "hadronization.toml"
    path.write_text(text)
    two = load_card(path)
    pipeline = Pipeline(two)
    hard = [pipeline.source.event(i) for i in range(events)]
    resim: Resimulator = pipeline.resimulator
    full_stage, had_stage = resim.stages
    from resim.generators.handoff import Job
    from resim.generators.resimulate import Realizations

    t0 = time.perf_counter()
    saved = resim._freeze_partons(hard, Realizations())
    t1 = time.perf_counter()
    had_items = [(Job(h.index, 1, r, 0, 1 + 7 * h.index + r), h, saved[h.index])
                 for h in hard for r in range(5)]
    had_stage.run(had_items)
    t2 = time.perf_counter()
    full_items = [(Job(h.index, 0, r, 0, 1 + 7 * h.index + r), h, None)
                  for h in hard for r in range(5)]
    full_stage.run(full_items)
    t3 = time.perf_counter()
    n = len(had_items)
    return (t3 - t2) / n, ((t1 - t0) + (t2 - t1)) / n, (t2 - t1) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    card = load_card(CARD).with_overrides(events=args.events)
    print(f"card {CARD.name}: {args.events} hard events x {card.realizations_per_event} "
          f"simple-shower variations; load average {os.getloadavg()[0]:.2f} at start")
    bare, ours, setups, timings = [], [], [], {}
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "pythia.log"
        for _ in range(args.rounds):  # alternate, so both see the same machine load
            with stdout_to(log):
                seconds, n = bare_pythia_seconds(card)
            bare.append(n / seconds)
            seconds, setup, timings, n = resim_seconds(card, Path(tmp))
            ours.append(n / seconds)
            setups.append(setup)
    rb, rr = statistics.median(bare), statistics.median(ours)
    print(f"bare Pythia next() loop : {rb:8.1f} realizations/s  (rounds: "
          f"{', '.join(f'{x:.1f}' for x in bare)})")
    print(f"resim generate          : {rr:8.1f} realizations/s  (rounds: "
          f"{', '.join(f'{x:.1f}' for x in ours)}); set-up {statistics.median(setups):.1f} s "
          "not included")
    print(f"ratio resim / bare      : {rr / rb:8.3f}   (target >= 0.90)")
    total = sum(timings.values())
    print("where resim's time goes (last round): " + ", ".join(
        f"{k} {100 * v / total:.1f}%" for k, v in timings.items()))
    with tempfile.TemporaryDirectory() as tmp, stdout_to(Path(tmp) / "p.log"):
        full, had, had_only = hadronization_cost(card, min(args.events, 60))
    print(f"per realization: full re-simulation {1e3 * full:.2f} ms; hadronization-only "
          f"{1e3 * had:.2f} ms with the shared parton shower amortised over 5 realizations "
          f"({full / had:.1f}x cheaper), {1e3 * had_only:.2f} ms for hadronization alone "
          f"({full / had_only:.1f}x)")


if __name__ == "__main__":
    main()

"""MPI scaling: realizations per second of ``resim generate`` at 1 and 2 ranks, on the same
card and hard events, measured side by side in one run, and the parallel efficiency
rate(2) / (2 rate(1)).

    python benchmarks/mpi_scaling.py [--events 600] [--rounds 3] [--max-load 0.5]

Each run is ``mpiexec -n N resim generate --card benchmarks/cards/mpi.toml`` in a
subprocess. Two rates per rank count:

- **steady state**: realizations / the slowest rank's generating time (the data set's
  ``rank_timings`` attribute: from the end of the rank's set-up to the end of its last
  commit). Every rank initialises its Pythia instances at the same time, so this set-up
  is a fixed cost that more ranks do not shrink and more events amortise; it is left out.
  This is the efficiency the target (>= 0.90) is for.
- **wall clock**: realizations / seconds of the whole command, Python start-up, Pythia
  set-up and the final data-set step included (printed too, with the split).

It also prints the CPU time per realization at both rank counts (from each rank's
process time while generating): equal values mean a second rank adds no work of its own;
and, as a control, the rate of two independent plain ``resim generate`` processes run side
by side (no MPI): what the machine itself gives two processes (shared caches, memory
bandwidth, the hypervisor), against which the MPI efficiency is also expressed.

The machine is shared: before each run the benchmark waits (up to ``--wait`` s) until
other processes use less than ``--max-load`` cores (sampled from /proc/stat), prints for
every run the CPU other processes took during it (all CPU time on the machine minus the
run's own), and repeats a run they disturbed that much (up to ``--retries`` times).
Rounds alternate the order (1 then 2 ranks, then 2 then 1) and medians are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import h5py

from resim.card import load_card

CARD = Path(__file__).parent / "cards" / "mpi.toml"
BIN = Path(sys.executable).parent


def _cpu_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(fields[:8]) - idle) / tick, sum(fields[:8]) / tick


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def others_load(seconds: float = 2.0) -> float:
    """Cores busy right now (no run of ours is going on), averaged over ``seconds``."""
    b0, _ = _cpu_busy()
    time.sleep(seconds)
    b1, _ = _cpu_busy()
    return (b1 - b0) / seconds


def wait_for_quiet(max_load: float, patience: float) -> float:
    end = time.monotonic() + patience
    while True:
        load = others_load()
        if load < max_load or time.monotonic() > end:
            if load >= max_load:
                print(f"  (machine still busy: {load:.2f} cores used by others; "
                      "measuring anyway)")
            return load
        time.sleep(10)


@dataclass
class Run:
    ranks: int
    realizations: int
    wall: float
    setup: float  # slowest rank's Pythia set-up
    work: float  # slowest rank's generating time
    foreign: float  # cores used by other processes during the run, on average
    jets: int
    cpu: float  # CPU seconds of all ranks while generating

    @property
    def cpu_per_realization(self) -> float:
        return self.cpu / self.realizations

    @property
    def steady_rate(self) -> float:
        return self.realizations / self.work

    @property
    def wall_rate(self) -> float:
        return self.realizations / self.wall


def run_once(ranks: int, card: Path, events: int, directory: Path, nice: int = 0,
             independent: bool = False) -> Run:
    """``mpiexec -n ranks resim generate``; or, with ``independent``, that many plain
    ``resim generate`` processes at once with events/ranks hard events each (no MPI: the
    machine's own ceiling for running that many processes side by side)."""
    outs = [directory / f"n{ranks}-{i}-{time.monotonic_ns()}.h5"
            for i in range(ranks if independent else 1)]
    resim = [str(BIN / "resim"), "generate", "--card", str(card), "--quiet"]
    if independent:
        cmds = [[*resim, "--events", str(events // ranks), "--output", str(o)] for o in outs]
    else:
        mpiexec = shutil.which("mpiexec", path=str(BIN)) or "mpiexec"
        cmds = [[mpiexec, "-n", str(ranks), *resim, "--events", str(events),
                 "--output", str(outs[0])]]
    if nice:
        cmds = [["nice", "-n", str(nice), *c] for c in cmds]
    busy0, cpu0 = _cpu_busy()[0], _children_cpu()
    start = time.perf_counter()
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL) for c in cmds]
    if any(p.wait() for p in procs):
        raise RuntimeError(f"a run failed: {cmds}")
    wall = time.perf_counter() - start
    busy1, cpu1 = _cpu_busy()[0], _children_cpu()
    timings, jets = [], 0
    for out in outs:
        with h5py.File(out, "r") as f:
            timings += json.loads(f.attrs["rank_timings"])
            jets += int(f.attrs["n_jets"])
        shutil.rmtree(out.with_name(out.name + ".parts"))
        out.unlink()
    assert len(timings) == ranks, timings
    return Run(ranks=ranks, realizations=sum(t["realizations"] for t in timings), wall=wall,
               setup=max(t["setup_seconds"] for t in timings),
               work=max(t["work_seconds"] for t in timings),
               foreign=max(0.0, (busy1 - busy0) - (cpu1 - cpu0)) / wall, jets=jets,
               cpu=sum(t["cpu_seconds"] for t in timings))


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--card", type=Path, default=CARD)
    parser.add_argument("--events", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-load", type=float, default=0.5,
                        help="wait until other processes use fewer cores than this")
    parser.add_argument("--wait", type=float, default=600.0,
                        help="seconds to wait for a quiet machine before each run")
    parser.add_argument("--nice", type=int, default=0,
                        help="run resim at this niceness (negative, as root: ahead of other "
                             "users' processes on a shared machine; reported)")
    parser.add_argument("--retries", type=int, default=3,
                        help="repeat a run during which others used --max-load cores or more")
    return parser.parse_args()


def _undisturbed_run(args: argparse.Namespace, r: int, ranks: int, independent: bool,
                     tmp: Path) -> Run:
    """One run, repeated (up to ``--retries`` times) while others used the cores it needs."""
    for attempt in range(args.retries + 1):
        before = wait_for_quiet(args.max_load, args.wait)
        run = run_once(ranks, args.card, args.events, tmp, args.nice, independent)
        # Others may use the cores this run leaves free without disturbing it.
        disturbed = run.foreign >= args.max_load + (os.cpu_count() or 1) - ranks
        what = ("2 plain processes" if independent else
                f"{ranks} rank{'s' if ranks > 1 else ' '}        ")
        print(f"  round {r + 1}, {what}: "
              f"wall {run.wall:6.1f} s = set-up {run.setup:4.1f} + generating "
              f"{run.work:5.1f} + rest {run.wall - run.setup - run.work:4.1f}; "
              f"others used {before:.2f} cores before, {run.foreign:.2f} during; "
              f"{1e3 * run.cpu_per_realization:.2f} CPU ms per realization"
              + ("  [disturbed: again]" if disturbed and attempt < args.retries
                 else ""))
        if not disturbed:
            break
    return run


def _measure(args: argparse.Namespace) -> tuple[dict[int, list[Run]], list[Run]]:
    """Runs at 1 and 2 ranks, and pairs of independent processes (the machine's ceiling),
    alternating their order round by round."""
    runs: dict[int, list[Run]] = {1: [], 2: []}
    pairs: list[Run] = []
    kinds = [(1, False), (2, False), (2, True)]
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for ranks, independent in (kinds if r % 2 == 0 else kinds[::-1]):
                run = _undisturbed_run(args, r, ranks, independent, Path(tmp))
                (pairs if independent else runs[ranks]).append(run)
    return runs, pairs


def _report(runs: dict[int, list[Run]], pairs: list[Run]) -> None:
    med = {n: {"steady": statistics.median(x.steady_rate for x in rs),
               "wall": statistics.median(x.wall_rate for x in rs),
               "foreign": statistics.median(x.foreign for x in rs)}
           for n, rs in runs.items()}
    for kind, what in (("steady", "steady state (slowest rank's generating time)"),
                       ("wall", "wall clock (whole command, set-up included)")):
        r1, r2 = med[1][kind], med[2][kind]
        print(f"{what}:\n  1 rank  {r1:7.1f} realizations/s\n  2 ranks {r2:7.1f} "
              f"realizations/s\n  efficiency rate2 / (2 rate1) = {r2 / (2 * r1):.3f}"
              + ("   (target >= 0.90)" if kind == "steady" else ""))
    ceiling = statistics.median(x.steady_rate for x in pairs) / (2 * med[1]["steady"])
    print(f"two independent processes (no MPI, half the events each), steady state: "
          f"{statistics.median(x.steady_rate for x in pairs):.1f} realizations/s = "
          f"{ceiling:.3f} of twice one rank: the most this machine gives two processes; "
          f"MPI efficiency / this = {med[2]['steady'] / (2 * med[1]['steady']) / ceiling:.3f}")
    cpu = {n: statistics.median(x.cpu_per_realization for x in rs) for n, rs in runs.items()}
    print(f"CPU time per realization while generating: {1e3 * cpu[1]:.2f} ms (1 rank), "
          f"{1e3 * cpu[2]:.2f} ms (2 ranks): ratio {cpu[1] / cpu[2]:.3f} (1 = no extra work "
          "per realization with more ranks)")
    last = runs[1][-1]
    print(f"jets per realization (selection of the card): {last.jets / last.realizations:.3f}; "
          f"one core makes {3600 * med[1]['steady'] * last.jets / last.realizations:.0f} "
          "jets per hour in the steady state")
    print(f"median CPU used by other processes during the runs: "
          f"{med[1]['foreign']:.2f} cores (1 rank), {med[2]['foreign']:.2f} cores (2 ranks); "
          f"load average {os.getloadavg()[0]:.2f} at the end (includes these runs)")



def main() -> None:
    args = _arguments()
    card = load_card(args.card)
    per_event = card.realizations_per_event
    print(f"card {args.card.name}: {args.events} hard events x {per_event} realizations "
          f"(simple shower); {os.cpu_count()} cores; load average "
          f"{os.getloadavg()[0]:.2f} at start; niceness {args.nice}")
    _report(*_measure(args))


if __name__ == "__main__":
    main()

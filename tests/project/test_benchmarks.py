"""The hand-run benchmarks still run: each on a few events, checking it prints its figures
(their numbers are measured by hand, never asserted: this machine is shared and noisy)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"


def run_benchmark(tmp_path: Path, script: str, *args: str) -> str:
    """A benchmark's output, run in ``tmp_path``; it must succeed and keep Pythia's messages
    in its log, not over its own lines."""
    result = subprocess.run([sys.executable, str(BENCHMARKS / script), *args],
                            capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "PYTHIA" not in result.stdout
    return result.stdout


@pytest.mark.slow
def test_generator_overhead_runs_and_reports_every_figure(tmp_path):
    out = run_benchmark(tmp_path, "generator_overhead.py", "--events", "12",
                        "--hadronization-events", "10", "--hadronization-rounds", "1")
    ratio = re.search(r"ratio resim / bare\s*: (\d\.\d+) wall \(95 % interval (\d\.\d+) \.\.\. "
                      r"(\d\.\d+)\)", out)
    assert ratio, out
    low, mid, high = float(ratio[2]), float(ratio[1]), float(ratio[3])
    assert 0 < low <= mid <= high
    for figure in ("what resim adds per realization", "hand-over", "nextBatch copy",
                   "hadronization-only", "re-hadronization alone"):
        assert figure in out


@pytest.mark.slow
def test_detector_cost_runs_and_reports_every_figure(tmp_path):
    out = run_benchmark(tmp_path, "detector_cost.py", "--events", "12")
    for figure in ("full re-simulation", "detector ", "detector-level jets",
                   "detector + its jets", "stage = \"detector\" realization"):
        assert figure in out, figure
    ratio = re.search(r"detector\s*: \d+\.\d+ ms per realization, (\d+\.\d+) % of a full "
                      r"re-simulation \(95 % interval (\d+\.\d+) \.\.\. (\d+\.\d+) %", out)
    assert ratio, out
    assert 0 < float(ratio[2]) <= float(ratio[1]) <= float(ratio[3])


@pytest.mark.slow
def test_bare_pythia_showers_the_hard_processes_resim_freezes():
    """The overhead benchmark's two sides must differ only by what resim adds: bare Pythia
    re-seeded per hard event makes exactly the upstream's hard process."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("generator_overhead",
                                                  BENCHMARKS / "generator_overhead.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    from resim.generators.hard_process import HardProcessSource
    from resim.generators.pythia_setup import stdout_to

    card = bench.load_card(bench.CARD)
    with stdout_to(Path("/dev/null")):
        bare, source = bench.BarePythia(card), HardProcessSource(card)
        for event in (0, 7):
            wall, cpu, n = bare.run(event, 1)
            assert wall > 0 and cpu > 0 and n == card.realizations_per_event
            hard = source.event(event)
            for pythia, _ in bare.runs:
                process = pythia.process
                assert process.size() - 3 == len(hard.particles)
                for k, row in enumerate(hard.particles):
                    assert process[k + 3].id() == row["id"]
                    assert process[k + 3].px() == row["px"] and process[k + 3].pz() == row["pz"]


@pytest.mark.slow
def test_train_throughput_runs_on_real_jets(top_dataset: Path) -> None:
    """The training benchmark on real resim jets: our encoders and (if weaver-core is
    installed) weaver's ParT as shipped and without trimming, with ratio intervals."""
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "train_throughput.py"), "--data", str(top_dataset),
         "--jets", "8", "--particles", "16", "--steps", "1", "--repeats", "3", "--threads", "1",
         "--sizes", "rs3l_part"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(r"batch 8 resim jets x 16 slots \(constituents: median \d+", out), out
    for name in ("part", "transformer", "particlenet"):
        assert re.search(rf"^{name}\s+\d+\.\d", out, re.M), name
    try:
        import weaver  # noqa: F401
    except ImportError:
        assert "weaver-core is not installed" in out
    else:
        for name in ("weaver part", "weaver part no-trim", "weaver transformer"):
            assert re.search(rf"^{name}\s+\d+\.\d\s+\d\.\d\d \(\d\.\d\d-\d\.\d\d\)", out, re.M), \
                name
    assert "loader / part step" in out


@pytest.mark.slow
def test_pileup_cost_runs_and_reports_every_figure(tmp_path):
    out = run_benchmark(tmp_path, "pileup_cost.py", "--events", "6", "--library-events", "500")
    for figure in ("full re-simulation", "with its detector", "the shower (Pythia)",
                   "pileup from the library", "pileup made by Pythia"):
        assert figure in out, figure
    names = ("ratio to a full re-simulation", r"\.\.\. with its detector",
             "ratio to the shower", "ratio to the library")
    for name in names:
        ratio = re.search(rf"{name}\s*: (\d+\.\d+) \(95 % interval (\d+\.\d+) \.\.\. "
                          r"(\d+\.\d+)\)", out)
        assert ratio, (name, out)
        assert 0 < float(ratio[2]) <= float(ratio[1]) <= float(ratio[3])

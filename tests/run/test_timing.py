"""The pipeline's step timer: a step timed inside another counts for itself only, so the
steps add up to the time spent."""

from __future__ import annotations

from types import SimpleNamespace

import resim.timing
from resim.timing import StepTimer


def test_nested_steps_count_for_themselves_only(monkeypatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(resim.timing, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    seconds = {"re-simulation": 0.0}
    timer = StepTimer(seconds)
    with timer.step("re-simulation"):
        clock[0] += 1.0
        for _ in range(2):  # two batches read inside the re-simulation
            with timer.step("final state"):
                clock[0] += 0.5
                with timer.step("hepmc"):
                    clock[0] += 0.25
        clock[0] += 1.0
    with timer.step("writing"):
        clock[0] += 2.0
    assert seconds == {"re-simulation": 2.0, "final state": 1.0, "hepmc": 0.5, "writing": 2.0}
    assert sum(seconds.values()) == clock[0]


def test_a_step_that_raises_is_counted_and_leaves_no_step_open(monkeypatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(resim.timing, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    timer = StepTimer({})
    try:
        with timer.step("detector"):
            clock[0] += 1.0
            raise RuntimeError
    except RuntimeError:
        pass
    with timer.step("jets"):
        clock[0] += 1.0
    assert timer.seconds == {"detector": 1.0, "jets": 1.0}

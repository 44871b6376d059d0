"""What the step-timing benchmarks (``detector_cost.py``, ``pileup_cost.py``) share: one
``resim generate`` run, after a short warm-up run, with a pipeline subclass that records
each block's step times, and those blocks with the writing spread over them."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import resim.generate as resim_generate
from resim.card import Card
from resim.generators.pythia_setup import stdout_to

Blocks = list[tuple[dict[str, float], int]]


def timed_run(pipeline: Any, card: Card, warm: Card | None = None
              ) -> tuple[Blocks, resim_generate.RunSummary, float]:
    """Run ``card`` with ``pipeline`` (a :class:`resim.generate.Pipeline` subclass whose
    class attributes ``blocks`` collect (step seconds, realizations) per block and
    ``last`` is the instance) in place of resim's, after two hard events of ``warm``
    (default: ``card``) for the first calls in a process. Returns the blocks, writing
    (done at commits, between blocks) spread over them by size; the run's summary; and
    its CPU seconds."""
    original = resim_generate.Pipeline
    resim_generate.Pipeline = pipeline
    try:
        with tempfile.TemporaryDirectory() as tmp:
            with stdout_to(Path(tmp) / "pythia.log"):
                resim_generate.generate((warm or card).with_overrides(
                    events=2, output=Path(tmp) / "warm.h5"), progress=False)
            pipeline.blocks.clear()
            start = time.process_time()
            summary = resim_generate.generate(card.with_overrides(output=Path(tmp) / "run.h5"),
                                              progress=False)
            cpu = time.process_time() - start
    finally:
        resim_generate.Pipeline = original
    writing = pipeline.last.timings["writing"]
    n = sum(r for _, r in pipeline.blocks)
    return [({**b, "writing": writing * r / n}, r) for b, r in pipeline.blocks], summary, cpu

"""``run_study``: plan, check the output, run what is incomplete, write the report."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from resim.train.config import ConfigError

from .execute import Echo, check_outputs, execute, utc_now
from .plan import plan
from .report import write_report
from .spec import Study
from .stages import KINDS, Stage

log = logging.getLogger(__name__)


def run_study(study: Study, output: str | Path, *, jobs: int | None = None,
              overwrite: bool = False, report: str | Path | None = None,
              command: str | None = None, echo: Echo | None = None) -> Path:
    """Run (or finish) the study into ``output``; write the report; return its path.

    ``report``: where the Markdown goes (default ``output/report.md``); its figures go in
    a folder of the same stem beside it (``report/``). ``command`` is quoted in the report.
    ``echo`` gets the study's progress lines (default: logged at INFO).
    """
    echo = echo or log.info
    began = time.time()
    output = Path(output)
    jobs = study.jobs if jobs is None else jobs
    if jobs < 1:
        raise ConfigError("--jobs", "", f"must be >= 1, got {jobs}")
    stages = plan(study, output)  # every config checked before anything runs
    check_outputs(stages, output, overwrite)
    output.mkdir(parents=True, exist_ok=True)
    (output / "study.toml").write_text(study.text)
    echo(f"study: {len(stages)} stages ({_counts(stages)}) into {output}, {jobs} at a time")
    to_run = sum(not s.complete for s in stages)
    execute(stages, output, jobs, study.threads, echo, study.heartbeat)
    timing = _update_timing(output, {
        "wall_seconds": round(time.time() - began, 1), "stages_run": to_run, "jobs": jobs,
        "complete": all(s.complete for s in stages)})
    path = write_report(study, stages, output, Path(report) if report else
                        output / "report.md", command=command, timing=timing)
    echo(f"study: report {path}")
    return path


def _counts(stages: Sequence[Stage]) -> str:
    return ", ".join(f"{sum(s.kind == k for s in stages)} {k}" for k in KINDS)


def _update_timing(output: Path, run: dict[str, Any]) -> dict[str, Any]:
    """Every invocation of the study on this output, with ``run`` added (``runs.json``)."""
    path = output / "runs.json"
    try:
        runs = json.loads(path.read_text())
    except (OSError, ValueError):
        runs = []
    runs.append({"finished": utc_now(), **run, "load": [round(x, 2) for x in os.getloadavg()],
                 "cpus": os.cpu_count()})
    path.write_text(json.dumps(runs, indent=1) + "\n")
    return {"runs": runs}


__all__ = ["run_study"]

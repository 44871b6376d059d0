"""The ``resim study`` command (registered on ``resim``'s group in ``resim/cli.py``).

Imports of torch, the trainer and the generator happen inside the command, so other
commands do not pay for them.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import click

from resim.train.commands import fail, run_reporting_errors


@click.command()
@click.option("--config", "config_name", required=True, metavar="STUDY",
              help="Study file, or the name of a shipped study (small, tiny).")
@click.option("--output", type=click.Path(path_type=Path), metavar="DIR",
              help="Where the data, runs, evaluations and report go (required).")
@click.option("--jobs", type=int, help="Stages run at once (overrides study.jobs).")
@click.option("--report", type=click.Path(path_type=Path), metavar="PATH",
              help="The Markdown report [default: DIR/report.md]; its PNGs go in a folder "
                   "of the same stem beside it.")
@click.option("--overwrite", is_flag=True,
              help="Remake stages in DIR that were made with other settings.")
@click.option("--print", "show", is_flag=True,
              help="Print the study config (to copy and edit) and exit.")
def study(config_name: str, output: Path | None, jobs: int | None, report: Path | None,
          overwrite: bool, show: bool) -> None:
    """Generate, pre-train every objective, fine-tune, evaluate, report (the RS3L study).

    A rerun reuses every complete stage and resumes unfinished ones. Shipped studies:
    `small` (about an hour on 2 quiet cores; docs/study.md is its report), `tiny` (tests).
    """
    if show:
        from resim.train.config import ConfigError

        from .spec import study_text

        try:
            click.echo(study_text(config_name), nl=False)
        except ConfigError as err:
            fail(str(err))
        return
    if output is None:
        fail("give --output DIR (where the study's data, runs and report go)")
    target: Path = output

    def run() -> Any:
        from .run import run_study
        from .spec import load_study

        words = ["resim", "study", "--config", config_name, "--output", str(target)]
        if jobs is not None:
            words += ["--jobs", str(jobs)]
        if report is not None:
            words += ["--report", str(report)]
        if overwrite:
            words.append("--overwrite")
        command = shlex.join(words)  # quoted in the report: the command that made it
        return run_study(load_study(config_name), target, jobs=jobs, overwrite=overwrite,
                         report=report, command=command)

    click.echo(run_reporting_errors(run))

"""The ``resim`` command line.

Exit codes: 0 success, 1 an unexpected failure, 2 a problem with what was asked
(bad card, existing output, unreadable file) — reported on one line.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

import click

from . import __version__
from .card import CardError, load_card, resolve_card_path, shipped_cards


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="resim")
def main() -> None:
    """Re-simulation-based self-supervised learning (RS3L) data and models for jets."""


@main.command()
@click.option("--card", "card_name", required=True, metavar="CARD",
              help="Card file, or the name of a shipped card (see `resim cards`).")
@click.option("--output", type=click.Path(path_type=Path), help="Output file (overrides the card).")
@click.option("--events", type=int, help="Number of hard events (overrides the card).")
@click.option("--seed", type=int, help="Run seed (overrides the card).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run into the same output.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def generate(card_name: str, output: Path | None, events: int | None, seed: int | None,
             resume: bool, overwrite: bool, quiet: bool) -> None:
    """Make groups of re-simulated jets from a card and write them to HDF5.

    Under `mpiexec -n N` the hard events are split across N ranks; the output is the
    same whatever N is.
    """
    from .generate import OutputError, WriteError
    from .generate import generate as run
    from .generators.hard_process import HardProcessError
    from .parallel import AnotherRankFailedError, stand_by, world

    if resume and overwrite:
        _fail("--resume and --overwrite exclude each other")
    comm = world()
    rank = comm.Get_rank()
    try:
        card = load_card(card_name).with_overrides(events=events, seed=seed, output=output)
        summary = run(card, resume=resume, overwrite=overwrite, comm=comm, progress=not quiet)
    except (CardError, OutputError) as err:
        if rank == 0:
            _fail(str(err))
        sys.exit(2)
    except HardProcessError as err:
        _abort(comm, f"rank {rank}: {err}")
    except WriteError as err:
        _abort(comm, str(err))
    except AnotherRankFailedError:  # another rank failed; it reports why and ends the job
        stand_by(comm)
    except Exception:  # a rank that fails must not leave the others waiting forever
        _abort(comm, f"rank {rank} failed:\n{traceback.format_exc()}")
    if rank == 0:
        click.echo(summary.line())


def _abort(comm, message: str) -> None:
    from .parallel import stop_all

    click.echo(f"error: {message}", err=True)
    if comm.Get_size() > 1:
        sys.stderr.flush()
        stop_all(comm)  # the others commit what they finished, then the job is aborted
    sys.exit(1)


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead of text.")
@click.option("--plot", type=click.Path(path_type=Path), metavar="FILE",
              help="Also draw jet mass, multiplicity and pT per label/variation to FILE.")
def inspect(path: Path, as_json: bool, plot: Path | None) -> None:
    """Summarise a data set: groups, jets per variation and label, failures."""
    from .dataset import DatasetError, JetDataset
    from .summary import as_text, describe
    from .summary import plot as draw

    try:
        ds = JetDataset(path)
    except (DatasetError, OSError) as err:
        _fail(str(err))
    with ds:
        d = describe(ds)
        click.echo(json.dumps(d, indent=1) if as_json else as_text(d))
        if plot is not None:
            draw(ds, plot)
            if not as_json:
                click.echo(f"  plot: {plot}")


@main.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("target", type=click.Path(path_type=Path))
def merge(source: Path, target: Path) -> None:
    """Copy a data set into one self-contained HDF5 file (no .parts directory needed)."""
    from .dataset import DatasetError, JetDataset
    from .store import merge as copy

    try:
        JetDataset(source).close()
    except (DatasetError, OSError) as err:
        _fail(str(err))
    if target.exists():
        _fail(f"{target} exists; remove it first")
    copy(source, target)
    click.echo(f"{source} -> {target} ({target.stat().st_size / 1e6:.1f} MB, self-contained)")


@main.command()
@click.argument("name", required=False)
def cards(name: str | None) -> None:
    """List the shipped cards, or print one (to copy and edit)."""
    if name is None:
        for card in shipped_cards():
            first = resolve_card_path(card).read_text().splitlines()[0].lstrip("# ")
            click.echo(f"{card:<10} {first}")
        return
    try:
        click.echo(resolve_card_path(name).read_text(), nl=False)
    except CardError as err:
        _fail(str(err))


@main.command()
@click.argument("card_name", metavar="CARD")
def check(card_name: str) -> None:
    """Check a card (every Pythia setting included) without generating anything."""
    from .generate import Pipeline

    try:
        card = load_card(card_name)
        Pipeline(card)
    except CardError as err:
        _fail(str(err))
    click.echo(f"{card.path}: ok ({len(card.variations)} variations, "
               f"{card.realizations_per_event} realizations per hard event)")


# ----------------------------------------------------------------- benchmark converters


@main.group()
def convert() -> None:
    """Convert standard benchmarks (JetClass, Top Tagging) into resim data sets.

    The output is a self-contained resim data set (each jet its own group, variation
    `nominal`) that `resim inspect`, `resim finetune` and `resim evaluate` read like any
    other. See docs/benchmarks.md.
    """


_SPLIT = click.option("--split", type=click.Choice(["train", "val", "test"]),
                      help="The upstream split this file belongs to (stored as an attribute).")
_OUTPUT = click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
                       help="The resim data set to write (.h5).")
_OVERWRITE = click.option("--overwrite", is_flag=True, help="Replace an existing output.")
_QUIET = click.option("--quiet", is_flag=True, help="No progress bar.")


def _converted(run, *args, **kwargs) -> None:
    from .convert import ConvertError

    try:
        summary = run(*args, **kwargs)
    except ConvertError as err:
        _fail(str(err))
    counts = ", ".join(f"{k} {v}" for k, v in summary["labels"].items() if v)
    click.echo(f"{kwargs['output']}: {summary['n_jets']} jets ({counts})")


@convert.command("jetclass")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@_OUTPUT
@_SPLIT
@_OVERWRITE
@_QUIET
def convert_jetclass(files: tuple[Path, ...], output: Path, split: str | None,
                     overwrite: bool, quiet: bool) -> None:
    """JetClass ROOT files (tree `tree`; part_*, label_* branches) -> one resim data set."""
    from .convert import convert_jetclass as run

    _converted(run, list(files), output=output, split=split, overwrite=overwrite,
               progress=not quiet)


@convert.command("toptagging")
@click.argument("file", type=click.Path(path_type=Path))
@_OUTPUT
@_SPLIT
@_OVERWRITE
@_QUIET
def convert_toptagging(file: Path, output: Path, split: str | None, overwrite: bool,
                       quiet: bool) -> None:
    """A Top Tagging reference file (pandas HDF5, key `table`) -> a resim data set."""
    from .convert import convert_toptagging as run

    _converted(run, file, output=output, split=split, overwrite=overwrite,
               progress=not quiet)


# ------------------------------------------------------------------ exports to other trainers


@main.command("export")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--format", "fmt", required=True, type=click.Choice(["weaver", "omnilearned"]),
              help="weaver: JetClass-format ROOT files + data config (weaver-core, ParT); "
                   "omnilearned: OmniLearned's custom-data HDF5 layout.")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="The directory to write (train/, val/, test/ and a manifest).")
@click.option("--classes", multiple=True, metavar="NAME=LABEL[,LABEL...]",
              help="A class and the labels it takes (LABEL:SPLITTING for a per-jet gluon "
                   "splitting, e.g. g_bb=g:g_bb); repeat for each class. Or one preset: "
                   "jetclass (JetClass's ten classes), rs3l (RS3L's eleven). Default: "
                   "every label its own class.")
@click.option("--max-particles", type=int, default=128, show_default=True,
              help="Constituents per jet in the fixed-size inputs (weaver's data config "
                   "length; OmniLearned's array width).")
@click.option("--fractions", metavar="TRAIN,VAL,TEST",
              help="Hard-event split fractions (default 0.8,0.1,0.1, as the trainer's).")
@_OVERWRITE
@_QUIET
def export_(files: tuple[Path, ...], fmt: str, output: Path, classes: tuple[str, ...],
            max_particles: int, fractions: str | None, overwrite: bool, quiet: bool) -> None:
    """resim data sets -> files weaver-core or OmniLearned train on, split by hard event,
    each jet keeping its group, variation and realization. See docs/export.md."""
    from .export import FORMATS, ExportError
    from .export.common import parse_fractions

    try:
        summary = FORMATS[fmt](list(files), output, classes=list(classes) or None,
                               max_particles=max_particles,
                               fractions=parse_fractions(fractions), overwrite=overwrite,
                               progress=not quiet)
    except ExportError as err:
        _fail(str(err))
    per_split = ", ".join(f"{split} {sum(n.values())}" for split, n in summary["jets"].items())
    click.echo(f"{output}: {per_split} jets in {len(summary['classes'])} classes "
               f"({', '.join(summary['classes'])}); manifest {output / 'resim_export.json'}")


# Training: `resim train`, `resim finetune`, `resim evaluate`, `resim configs`.
from .train.commands import COMMANDS as _TRAINING  # noqa: E402  (imports no torch)

for _command in _TRAINING:
    main.add_command(_command)


if __name__ == "__main__":
    main()

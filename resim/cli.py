"""The ``resim`` command line.

Every error a user can meet is a :class:`~resim.errors.ResimError`, reported as one line
``error: <message>`` with its exit code: 2 a problem with what was asked (bad card,
existing output, unreadable file), 1 a failure while working (a full disk), 128 + N
stopped by signal N. Anything else is a bug in resim: one line too, with the traceback
written to a file; ``resim --debug COMMAND`` (or ``RESIM_DEBUG=1``) prints tracebacks.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path

import click

from . import __version__
from .card import CardError, card_text, load_card, resolve_card_path, shipped_cards
from .errors import ResimError
from .messages import show_messages
from .store import exit_if_abandoned

#: errno values that mean "this path, as given, cannot be used" (exit code 2, as for any
#: problem with what was asked) rather than "the machine failed while working" (1).
_PATH_ERRNOS = {errno.ENOENT, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR,
                errno.EEXIST, errno.EROFS, errno.ENAMETOOLONG}


def _fail(message: str) -> None:
    raise ResimError(message)


def _folder_of(path: Path) -> None:
    """A file is to be written at ``path``: its folder must exist (none is made, so a
    typo in a path is an error, not a new folder tree)."""
    if not path.parent.is_dir():
        _fail(f"the folder {path.parent} does not exist (for {path}); create it first or fix "
              "the path")


def os_error_line(err: OSError) -> str:
    """An OSError as one line naming its file: ``path: No space left on device``."""
    what = err.strerror or str(err).splitlines()[0] or type(err).__name__
    return f"{err.filename}: {what}" if err.filename else what


def _traceback_file() -> str:
    with tempfile.NamedTemporaryFile("w", prefix="resim-traceback-", suffix=".txt",
                                     delete=False) as f:
        f.write(" ".join(sys.argv) + "\n\n" + traceback.format_exc())
    return f.name


def describe_exception(err: BaseException) -> tuple[str, int]:
    """The one-line message and exit code of any exception a command raised."""
    if isinstance(err, ResimError):
        return str(err), err.exit_code
    if isinstance(err, OSError):
        return os_error_line(err), 2 if err.errno in _PATH_ERRNOS else 1
    if isinstance(err, KeyboardInterrupt):
        return "interrupted", 130
    if isinstance(err, MemoryError):  # what was asked does not fit, not a bug in resim
        return f"out of memory: {str(err).splitlines()[0] if str(err) else 'allocating'}", 1
    where = _traceback_file()
    return (f"unexpected {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''} "
            f"(a bug in resim; the traceback is in {where}, `resim --debug ...` prints it)",
            1)


def debugging() -> bool:
    return os.environ.get("RESIM_DEBUG", "") not in ("", "0")


class _Commands(click.Group):
    """resim's command group: any error a command raises becomes one line (see above)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit,
                click.exceptions.Abort):
            raise
        except BrokenPipeError:
            # The reader went away (`resim configs | head -3`): stop quietly, as cat does,
            # with stdout on /dev/null so the interpreter's last flush cannot fail again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(128 + signal.SIGPIPE)
        except (Exception, KeyboardInterrupt) as err:
            if debugging():
                raise
            message, code = describe_exception(err)
            if os.environ.get("RANK", "0") == "0":  # under torchrun, once
                click.echo(f"error: {message}", err=True)
            exit_if_abandoned(code)  # an HDF5 file could not be written: at once
            ctx.exit(code)


def _debug(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        os.environ["RESIM_DEBUG"] = "1"  # also reaches MPI ranks and worker processes


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="resim")
@click.option("--debug", is_flag=True, expose_value=False, is_eager=True, callback=_debug,
              help="Print the traceback of an error (also: RESIM_DEBUG=1).")
def main() -> None:
    """Re-simulation-based self-supervised learning (RS3L) data and models for jets."""
    show_messages()  # the library's logging on stderr, as resim has always written it


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
    from .output import OutputError, checked_output
    from .parallel import (
        AnotherRankFailedError,
        MpiUnavailableError,
        launcher_rank,
        stand_by,
        world,
    )

    if resume and overwrite:
        _fail("--resume and --overwrite exclude each other")
    try:
        comm = world()
    except MpiUnavailableError:
        if launcher_rank() == 0:  # every rank finds it: one says it
            raise
        sys.exit(2)
    rank = comm.Get_rank()
    card = None
    try:
        card = load_card(card_name).with_overrides(events=events, seed=seed, output=output)
        if rank == 0:
            _note_defaults(card)
        # Before importing Pythia and the rest (~1 s) and setting it up (up to minutes).
        checked_output(card, resume, overwrite, comm)
        from .generate import generate as run

        summary = run(card, resume=resume, overwrite=overwrite, comm=comm, progress=not quiet)
    except (CardError, OutputError):
        # Raised by every rank alike, before any work: rank 0 reports it.
        if rank == 0:
            raise
        sys.exit(2)
    except AnotherRankFailedError:  # another rank failed; it reports why and ends the job
        stand_by(comm)
    except (Exception, KeyboardInterrupt) as err:
        # A rank that fails must not leave the others waiting forever.
        _abort(comm, err, None if card is None else card.run.output)
    if rank == 0:
        click.echo(summary.line())


def _note_defaults(card) -> None:
    """Name the defaults that decide how much is made, where to, and what a jet is, when
    the card relies on them (docs/cards.md)."""
    if card.unset:
        click.echo(f"note: {card.path} leaves unset, so resim uses: {', '.join(card.unset)}",
                   err=True)


def _abort(comm, err: BaseException, output: Path | None) -> None:
    """Report a failure (or a stop by a signal) of this rank on one line, saying that
    ``--resume`` continues the run; stop the other ranks (they commit what they finished)
    and exit."""
    from .parallel import stop_all
    from .signals import StoppedBySignalError
    from .store import parts_dir

    if debugging():
        traceback.print_exc()
    message, code = describe_exception(err)
    report: Callable[[], None] | None
    if isinstance(err, StoppedBySignalError):
        # Said once all ranks have committed: what they saved is counted then.
        def report() -> None:
            click.echo(f"error: {err}", err=True)
    else:
        if comm.Get_size() > 1:
            message = f"rank {comm.Get_rank()}: {message}"
        # A ResimError of exit code 2 is a problem with what was asked (the card): --resume
        # would meet it again.
        asked = isinstance(err, ResimError) and code == 2
        if (output is not None and parts_dir(output).is_dir() and "--resume" not in message
                and not asked):
            message += (f"; the hard events finished before are kept in {parts_dir(output)}/: "
                        "fix the cause and rerun with --resume to continue")
        click.echo(f"error: {message}", err=True)
        report = None
    if comm.Get_size() > 1:
        sys.stderr.flush()
        # The others commit what they finished, then the job is aborted.
        stop_all(comm, report=report, code=code)
    elif report is not None:
        report()
    exit_if_abandoned(code)  # an HDF5 file could not be written: at once (store.py)
    sys.exit(code)


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead of text.")
@click.option("--plot", type=click.Path(path_type=Path), metavar="FILE",
              help="Also draw jet mass and multiplicity per label/variation to FILE.")
def inspect(path: Path, as_json: bool, plot: Path | None) -> None:
    """Summarise a data set: groups, jets per variation and label, failures."""
    from .dataset import JetDataset
    from .summary import as_text, describe
    from .summary import plot as draw

    if plot is not None:
        _folder_of(plot)
    with JetDataset(path) as ds:
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
    from .dataset import JetDataset
    from .store import merge as copy

    JetDataset(source).close()
    if target.exists():
        _fail(f"{target} exists; remove it first")
    _folder_of(target)
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
    click.echo(card_text(name), nl=False)


@main.command()
@click.argument("card_name", metavar="CARD")
def check(card_name: str) -> None:
    """Check a card (every Pythia setting included) without generating anything."""
    from .generate import Pipeline

    card = load_card(card_name)
    _note_defaults(card)
    Pipeline(card)
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
    summary = run(*args, **kwargs)
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
    from .export import FORMATS
    from .export.common import parse_fractions

    summary = FORMATS[fmt](list(files), output, classes=list(classes) or None,
                           max_particles=max_particles, fractions=parse_fractions(fractions),
                           overwrite=overwrite, progress=not quiet)
    per_split = ", ".join(f"{split} {sum(n.values())}" for split, n in summary["jets"].items())
    n = len(summary["classes"])
    click.echo(f"{output}: {per_split} jets in {n} class{'es' if n != 1 else ''} "
               f"({', '.join(summary['classes'])}); manifest {output / 'resim_export.json'}")


# Training: `resim train`, `resim finetune`, `resim evaluate`, `resim configs`; and
# `resim study`, which uses both the generator and the trainer.
from .study.command import study as _study  # noqa: E402  (imports no torch)
from .train.commands import COMMANDS as _TRAINING  # noqa: E402  (imports no torch)

for _command in (*_TRAINING, _study):
    main.add_command(_command)


if __name__ == "__main__":
    main()

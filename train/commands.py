"""The training commands of the ``resim`` command line: train, finetune, evaluate, probe,
configs (``resim study`` is :mod:`resim.study.command`).

They are registered on ``resim``'s click group in ``resim/cli.py``. Imports of torch and
the trainer happen inside the commands, so ``resim generate`` does not pay for them.
A user mistake (bad config, missing file, output holding another run) is one line on
stderr and exit code 2; under ``torchrun`` only rank 0 prints it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import click

_DATA = click.option("--data", "data", multiple=True, type=click.Path(path_type=Path),
                     metavar="PATH", help="A resim data set; repeat for several (e.g. top + QCD).")
_OUTPUT = click.option("--output", required=True, type=click.Path(path_type=Path),
                       metavar="DIR", help="Run directory (last.pt, metrics.csv, tb/).")
_EPOCHS = click.option("--epochs", type=int, help="Epochs (overrides run.epochs).")
_MAX_JETS = click.option("--max-jets", type=int,
                         help="Use at most N jets per split (overrides data.max_jets).")
_SET = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                    help="Override a config key, e.g. --set optimizer.lr=3e-4; repeatable.")
_RESUME = click.option("--resume", is_flag=True,
                       help="Continue the run in DIR from its last checkpoint.")
_OVERWRITE = click.option("--overwrite", is_flag=True,
                          help="Replace the run in DIR.")
_QUIET = click.option("--quiet", is_flag=True, help="No progress bar or epoch lines.")


def _main_rank() -> bool:
    return os.environ.get("RANK", "0") == "0"


def fail(message: str) -> NoReturn:
    if _main_rank():
        click.echo(f"error: {message}", err=True)
    sys.exit(2)


def run_reporting_errors(action: Callable[[], Any], overrides: Overrides | None = None) -> Any:
    """Run ``action``; config and run problems become one-line errors (exit code 2), naming
    the option that gave a bad value as the user typed it."""
    from .config import ConfigError
    from .loop import RunError

    try:
        return action()
    except (ConfigError, RunError) as err:
        fail(str(err) if overrides is None else overrides.as_typed(str(err)))
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


class Overrides:
    """A command's config overrides: ``--set``'s, then those its own options make, with the
    option each came from, so that an error names ``--epochs 0`` rather than the
    ``--set run.epochs=0`` it became."""

    def __init__(self, given: Sequence[str], epochs: int | None, max_jets: int | None):
        self.items = list(given)
        self._typed: dict[str, str] = {}
        if epochs is not None:
            self.add(f"run.epochs={epochs}", f"--epochs {epochs}")
        if max_jets is not None:
            self.add(f"data.max_jets={max_jets}", f"--max-jets {max_jets}")

    def add(self, item: str, typed: str) -> None:
        """The override ``item``, made by the command-line option ``typed``."""
        self.items.append(item)
        self._typed[item] = typed

    def as_typed(self, message: str) -> str:
        """``message`` (a config error's) naming options as they were typed."""
        for item, typed in self._typed.items():
            message = message.replace(f"(--set {item})", f"({typed})")
        return message


def _load(name: str | None) -> Any:
    from .config import load_config

    return None if name is None else load_config(name)


def _report(output: Path, result: Any) -> None:
    if not _main_rank():
        return
    pos = result.position
    parts = [f"{output / 'last.pt'}: {pos.epoch} epochs, {pos.step} steps"]
    if result.train_loss is not None:
        parts.append(f"train loss {result.train_loss:.4g}")
    if result.val_loss is not None:
        parts.append(f"val loss {result.val_loss:.4g}")
    if result.jets_per_s:
        parts.append(f"{result.jets_per_s:.0f} jets/s")
    if result.seconds:
        parts.append(f"{result.seconds:.0f} s")
    click.echo(", ".join(parts))


@click.command()
@click.option("--config", "config_name", metavar="CONFIG",
              help="Config file, or the name of a shipped config (see `resim configs`).")
@_DATA
@_OUTPUT
@_EPOCHS
@_MAX_JETS
@_SET
@_RESUME
@_OVERWRITE
@_QUIET
def train(config_name: str | None, data: tuple[Path, ...], output: Path, epochs: int | None,
          max_jets: int | None, overrides: tuple[str, ...], resume: bool, overwrite: bool,
          quiet: bool) -> None:
    """Pre-train a jet encoder on resim data (RS3L, VICReg: see `resim configs`).

    Under `torchrun --nproc-per-node N --no-python resim train ...` the batches are split
    over N processes (DDP). `--resume` continues DIR's run (its config and data are stored
    in DIR/last.pt; `--epochs` may extend it).
    """

    def run() -> Any:
        from .pretrain import pretrain

        if config_name is None and not resume:
            fail("give --config CONFIG (a file or a shipped config; see `resim configs`)")
        return pretrain(_load(config_name), list(data), output, resume=resume,
                        overwrite=overwrite, overrides=extra.items, progress=not quiet)

    extra = Overrides(overrides, epochs, max_jets)
    _report(output, run_reporting_errors(run, extra))


@click.command()
@click.option("--checkpoint", type=click.Path(path_type=Path), metavar="CKPT",
              help="Pre-training checkpoint (DIR/last.pt of resim train). Without it, the "
                   "config's [encoder] is trained from scratch.")
@_DATA
@_OUTPUT
@click.option("--config", "config_name", metavar="CONFIG",
              help="Fine-tuning config, file or shipped name  [default: finetune].")
@click.option("--fraction", type=float, help="Labelled fraction of the training jets.")
@click.option("--frozen", is_flag=True, help='Freeze the encoder (RS3L\'s "fixed" backbone).')
@click.option("--variations", "variations", multiple=True, metavar="NAME",
              help="Fine-tune on the jets of these variations (repeatable, or 'all'; "
                   "overrides data.variations), e.g. --variations nominal for a "
                   "robustness study.")
@click.option("--head", type=click.Choice(["linear", "mlp"]), help="Classification head.")
@click.option("--classes", "classes", multiple=True, metavar="NAME=LABEL[,LABEL...]",
              help="A class and the data labels it merges, e.g. --classes qcd=q,g "
                   "--classes top=top (default: every label its own class).")
@_EPOCHS
@_MAX_JETS
@_SET
@_RESUME
@_OVERWRITE
@_QUIET
def finetune(checkpoint: Path | None, data: tuple[Path, ...], output: Path,
             config_name: str | None, fraction: float | None, frozen: bool,
             variations: tuple[str, ...], head: str | None,
             classes: tuple[str, ...], epochs: int | None, max_jets: int | None,
             overrides: tuple[str, ...], resume: bool, overwrite: bool, quiet: bool) -> None:
    """Fine-tune a classifier on labelled jets, on a pre-trained (or a fresh) encoder."""

    def run() -> Any:
        from .finetune import classes_override
        from .finetune import finetune as run_finetune

        if fraction is not None:
            extra.add(f"finetune.fraction={fraction}", f"--fraction {fraction}")
        if frozen:
            extra.add('finetune.backbone="fixed"', "--frozen")
        if variations:
            extra.add("data.variations=[" + ", ".join(f'"{v}"' for v in variations) + "]",
                      " ".join(f"--variations {v}" for v in variations))
        if head is not None:
            extra.add(f'finetune.head="{head}"', f"--head {head}")
        if classes:
            extra.add(classes_override(_parse_classes(classes)),
                      " ".join(f"--classes {c}" for c in classes))
        name = config_name or (None if resume else "finetune")
        return run_finetune(_load(name), list(data), output, checkpoint, resume=resume,
                            overwrite=overwrite, overrides=extra.items, progress=not quiet)

    extra = Overrides(overrides, epochs, max_jets)
    _report(output, run_reporting_errors(run, extra))


def _parse_classes(items: Sequence[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in items:
        name, sep, labels = item.partition("=")
        members = [label.strip() for label in labels.split(",") if label.strip()]
        if not sep or not name.strip() or not members:
            fail(f"--classes {item}: expected NAME=LABEL[,LABEL...], e.g. qcd=q,g")
        if name.strip() in out:
            fail(f"--classes {item}: class {name.strip()!r} given twice")
        out[name.strip()] = members
    if len(out) < 2:
        fail("--classes: give at least two classes")
    return out


@click.command()
@click.option("--checkpoint", required=True, type=click.Path(path_type=Path), metavar="CKPT",
              help="Fine-tuning checkpoint (DIR/last.pt of resim finetune).")
@_DATA
@click.option("--output", required=True, type=click.Path(path_type=Path), metavar="DIR",
              help="Where metrics.json, roc.png and scores.npz go (with --shift: "
                   "shift.json and shift.png).")
@click.option("--split", type=click.Choice(["test", "val", "train", "all"]), default="test",
              show_default=True, help="Which split of the data to evaluate on.")
@click.option("--variations", "variations", multiple=True, metavar="NAME",
              help="Variations to evaluate on (repeatable, or 'all'); default: the ones "
                   "fine-tuned on (nominal unless the config says otherwise).")
@click.option("--shift", is_flag=True,
              help="Robustness: evaluate on every variation and compare each with "
                   "--reference (metric changes, Jensen-Shannon distance of the outputs).")
@click.option("--reference", default="nominal", show_default=True, metavar="NAME",
              help="With --shift: the variation the others are compared with (usually the "
                   "one fine-tuned on).")
@click.option("--signal", metavar="CLASS",
              help="Signal class for the top-level numbers (default: the last class of a "
                   "binary problem; the mean over class pairs otherwise).")
@_MAX_JETS
@click.option("--overwrite", is_flag=True, help="Replace an earlier evaluation in DIR.")
def evaluate(checkpoint: Path, data: tuple[Path, ...], output: Path, split: str,
             variations: tuple[str, ...], shift: bool, reference: str, signal: str | None,
             max_jets: int | None, overwrite: bool) -> None:
    """Evaluate a fine-tuned classifier: accuracy, AUC, background rejection, ROC plot.

    With --shift, evaluate it on every variation of the split instead and print how its
    metrics and output distributions move away from the reference variation.
    """

    def run() -> Any:
        from .evaluate import evaluate as run_evaluate
        from .evaluate import evaluate_shift

        if not data:
            fail("give at least one data file (--data)")
        if shift:
            if variations:
                fail("--shift evaluates every variation; drop --variations")
            return evaluate_shift(checkpoint, list(data), output, reference=reference,
                                  split=split, max_jets=max_jets, signal=signal,
                                  overwrite=overwrite)
        if reference != "nominal":
            fail("--reference needs --shift")
        chosen: str | list[str] | None = None
        if variations:
            chosen = "all" if list(variations) == ["all"] else list(variations)
        return run_evaluate(checkpoint, list(data), output, split=split, variations=chosen,
                            signal=signal, max_jets=max_jets, overwrite=overwrite)

    m = run_reporting_errors(run, Overrides((), None, max_jets))
    if shift:
        from .evaluate import format_shift_table

        click.echo(format_shift_table(m))
        click.echo(f"-> {output / 'shift.json'}, {output / 'shift.png'}")
        return

    def number(value: float | None, digits: int) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    click.echo(f"{m['n_jets']} jets ({m['definition']}): accuracy {number(m['accuracy'], 3)}, "
               f"AUC {number(m['auc'], 4)}, 1/eps_B at eps_S = 0.3: "
               f"{number(m['rejection_at_0.3'], 1)}, at 0.5: {number(m['rejection_at_0.5'], 1)}"
               f" -> {output / 'metrics.json'}, {output / 'roc.png'}")


@click.command()
@click.option("--checkpoint", required=True, type=click.Path(path_type=Path), metavar="CKPT",
              help="Pre-training checkpoint (DIR/last.pt of resim train).")
@_DATA
@click.option("--output", required=True, type=click.Path(path_type=Path), metavar="DIR",
              help="Where probe.json and probe.png go.")
@click.option("--classes", "classes", multiple=True, metavar="NAME=LABEL[,LABEL...]",
              help="A class and the data labels it merges, e.g. --classes qcd=q,g "
                   "--classes top=top (default: every label its own class).")
@_MAX_JETS
@click.option("--overwrite", is_flag=True, help="Replace an earlier probe in DIR.")
def probe(checkpoint: Path, data: tuple[Path, ...], output: Path, classes: tuple[str, ...],
          max_jets: int | None, overwrite: bool) -> None:
    """Probe a pre-trained encoder's frozen representation against its random init.

    kNN accuracy, a linear probe, effective rank, alignment and uniformity, and linear
    fits of jet |eta|, log pT, mass and constituent count (shortcut detectors), on the
    checkpoint's splits: DIR/probe.json and DIR/probe.png.
    """

    def run() -> Any:
        from .probe import probe as run_probe

        mapping = _parse_classes(classes) if classes else None
        return run_probe(checkpoint, list(data), output, classes=mapping, max_jets=max_jets,
                         overwrite=overwrite)

    result = run_reporting_errors(run, Overrides((), None, max_jets))
    from .probe import summary_lines

    width = max(len(r[0]) for r in summary_lines(result))
    click.echo(f"{'':<{width}}  {'encoder':>8}  {'random':>8}")
    for name, ours, base in summary_lines(result):
        click.echo(f"{name:<{width}}  {ours:>8}  {base:>8}")
    if not result["labelled"]:
        click.echo(f"note: {result['note']}")
    click.echo(f"-> {output / 'probe.json'}, {output / 'probe.png'}")


@click.command()
@click.argument("name", required=False)
def configs(name: str | None) -> None:
    """List the shipped training configs, or print one (to copy and edit)."""
    from .config import ConfigError, config_text, resolve_config_path, shipped_configs

    if name is None:
        for config in shipped_configs():
            first = resolve_config_path(config).read_text().splitlines()[0].lstrip("# ")
            click.echo(f"{config:<22} {first}")
        return
    try:
        click.echo(config_text(name), nl=False)
    except ConfigError as err:
        fail(str(err))


COMMANDS = (train, finetune, evaluate, probe, configs)

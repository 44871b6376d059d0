"""Where a run writes: the output location, checked before any work, and the run's record
``OUTPUT.parts/run.json`` that ``--resume`` compares the card against.

:func:`check_output` runs before Pythia is set up (seconds to minutes for a big card),
writes nothing and imports nothing heavy, so a wrong path is an error at once: a folder
that does not exist (resim creates none), a location it cannot write, an output that
exists, or a resume whose card, seed or number of events differ from the run's.
:func:`prepare_output` then, after the set-up has checked the card, creates
``OUTPUT.parts/`` and the record.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .card import Card
from .errors import ResimError
from .parallel import Comm, launch_problem, on_rank0
from .store import new_run_id, parts_dir

RUN_RECORD = "run.json"

#: What a run's record says the run is (``new``: nothing yet; ``resume``: an interrupted
#: run to continue; ``complete``: a finished run, nothing to do).
NEW, RESUME, COMPLETE = "new", "resume", "complete"


class OutputError(ResimError, RuntimeError):
    """The output cannot be written as asked (exists, unwritable, or another card's)."""


class LaunchError(OutputError):
    """The ranks were started so that each would write the whole output (docs/cluster.md)."""


def fingerprint(card: Card) -> str:
    """A hash of the card's text, seed and number of events (what older run records kept)."""
    text = json.dumps([card.text, card.run.events, card.run.seed])
    return hashlib.sha256(text.encode()).hexdigest()


#: Card settings the data do not depend on (and seed and events, compared on their own).
_NOT_DATA = {"path", "text", "labels", "unset", "run.output", "run.batch_events",
             "run.commit_seconds", "run.events", "run.seed"}


def card_settings(card: Card) -> dict[str, Any]:
    """Everything in a parsed card the data depend on, as flat ``key.path -> value``: the
    same for two cards that differ in comments, layout or order of tables only.

    Tables of named things (variations, decays) are keyed by name; lists of Pythia settings
    are kept in order (Pythia reads them in order: ``Tune:pp`` resets others).
    """
    return _flatten(card)[0]


def _flatten(card: Card) -> tuple[dict[str, Any], dict[str, Any]]:
    """:func:`card_settings`, and the default of every key that has one."""
    flat: dict[str, Any] = {}
    defaults: dict[str, Any] = {}

    def plain(value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, float) and math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        return value

    def setting(value: Any) -> bool:
        return dataclasses.is_dataclass(value) and hasattr(value, "line")

    def walk(value: Any, key: str) -> None:
        if key in _NOT_DATA:
            return
        if setting(value):
            flat[key] = value.line
        elif dataclasses.is_dataclass(value):
            for f in dataclasses.fields(value):
                if key.startswith(("variations.", "decays.")) and f.name in ("name", "pdg"):
                    continue  # the key says it
                sub = f"{key}.{f.name}" if key else f.name
                if f.default is not dataclasses.MISSING:
                    defaults[sub] = plain(f.default)
                walk(getattr(value, f.name), sub)
        elif isinstance(value, tuple | list) and value and all(map(setting, value)):
            flat[key] = [v.line for v in value]
        elif isinstance(value, tuple | list) and value and all(
                map(dataclasses.is_dataclass, value)):
            names = [str(getattr(v, "name", getattr(v, "pdg", i))) for i, v in enumerate(value)]
            flat[key] = names  # their order matters too (variation codes in the data)
            for name, v in zip(names, value, strict=True):
                walk(v, f"{key}.{name}")
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{key}.{k}")
        else:
            flat[key] = plain(value)

    walk(card, "")
    # As a record reads back from JSON.
    return json.loads(json.dumps(flat)), json.loads(json.dumps(defaults))


def setting_changes(was: dict[str, Any], now: dict[str, Any],
                    defaults: dict[str, Any] | None = None) -> list[str]:
    """``key old -> new`` for each setting that differs; a table added or removed as a
    whole (``variations.cr``) is named once. A key ``was`` lacks whose value is its
    ``defaults`` entry is no change: a setting resim gained since, left as it was."""
    defaults = defaults or {}

    def whole(keys: set[str], other: dict[str, Any]) -> set[str]:
        """Each key, or its outermost table of which the other side has nothing."""
        out = set()
        for key in keys:
            parts = key.split(".")
            tables = (".".join(parts[:i]) for i in range(1, len(parts)))
            out.add(next((t for t in tables if not any(k.startswith(t + ".") for k in other)),
                         key))
        return out

    new = {k for k in set(now) - set(was) if k not in defaults or now[k] != defaults[k]}
    changes = [f"{key} removed" for key in sorted(whole(set(was) - set(now), now))]
    changes += [f"{key} added" for key in sorted(whole(new, was))]
    changes += [f"{key} {was[key]!r} -> {now[key]!r}" for key in sorted(set(was) & set(now))
                if was[key] != now[key]]
    return changes


def read_record(parts: Path) -> dict[str, Any] | None:
    path = parts / RUN_RECORD
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise OutputError(f"{path}: cannot read this run's record ({err}); --overwrite "
                          "starts the run over") from None


def resume_problem(record: dict[str, Any], card: Card) -> str | None:
    """Which of seed, number of events and card settings differ between the run a record
    describes and ``card``, and how (None: nothing does)."""
    differ = []
    if record.get("seed") != card.run.seed:
        differ.append(f"seed {record.get('seed')} (now {card.run.seed})")
    if record.get("events") != card.run.events:
        differ.append(f"events {record.get('events')} (now {card.run.events})")
    if "settings" in record:
        changes = setting_changes(record["settings"], *_flatten(card))
        if changes:
            shown = ", ".join(changes[:4]) + (f" and {len(changes) - 4} more"
                                               if len(changes) > 4 else "")
            differ.append(f"card settings: {shown}")
    elif record.get("fingerprint") != fingerprint(card) and not differ:
        # Written by a resim that kept only a hash of the card's text.
        differ.append("card text (the run's record, from an older resim, keeps only a hash "
                      "of it: even a changed comment differs)")
    return "; ".join(differ) or None


def checked_output(card: Card, resume: bool, overwrite: bool, comm: Comm) -> str:
    """:func:`check_output` on rank 0 for every rank, after checking that the ranks were
    started as one job (docs/cluster.md)."""
    problem = launch_problem(comm)
    if problem:
        raise LaunchError(problem)
    return on_rank0(comm, lambda: check_output(card, resume, overwrite))


def check_output(card: Card, resume: bool, overwrite: bool) -> str:
    """Check the output location before any work; writes nothing. Returns NEW, RESUME or
    COMPLETE, or raises :class:`OutputError` with what is wrong and what to do."""
    output = card.run.output
    parts = parts_dir(output)
    folder = output.parent
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder} is a file, not a folder (the output is {output}); fix "
                          "the path")
    if not folder.is_dir():
        raise OutputError(f"the folder {folder} does not exist (the output is {output}); "
                          "create it first or fix the path: resim creates no folders")
    if output.is_dir():
        raise OutputError(f"{output} is a folder; give the output a file name, e.g. "
                          f"{output / 'resim.h5'}")
    if parts.exists() and not parts.is_dir():
        raise OutputError(f"{parts} exists and is not a folder; remove it or choose "
                          "another output")
    state = NEW
    if (output.exists() or parts.exists()) and not overwrite:
        if not resume:
            there = (f"{output} exists" if output.exists() else
                     f"{parts} exists (an unfinished run: its data set {output.name} is "
                     "not written yet)")
            raise OutputError(f"{there}; pass --resume to continue that run or --overwrite "
                              "to replace it")
        record = read_record(parts)
        if record is not None:
            problem = resume_problem(record, card)
            if problem:
                raise OutputError(f"{output} was made with another card, seed or number of "
                                  f"events, so --resume cannot continue it: {problem}; "
                                  "resume with what made it, or --overwrite to replace it")
            state = COMPLETE if output.is_file() else RESUME
        elif output.exists():
            raise OutputError(f"{output} exists but is not a resumable resim run ({parts} "
                              "is missing); use --overwrite to replace it")
    _check_writable(output, parts if parts.is_dir() and state != NEW else folder)
    return state


def _check_writable(output: Path, folder: Path) -> None:
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".resim-probe-"):
            pass
    except OSError as err:
        raise OutputError(f"cannot write the output {output}: {err.strerror or err} "
                          f"({folder})") from None


def prepare_output(card: Card, state: str, overwrite: bool) -> str | None:
    """Create the output's folder and the run's record (rank 0, after the set-up has
    checked the card); returns the run's identity (None for runs begun by a resim that
    stored none)."""
    output = card.run.output
    parts = parts_dir(output)
    try:
        if state == NEW:
            if overwrite:
                output.unlink(missing_ok=True)
                shutil.rmtree(parts, ignore_errors=True)
            parts.mkdir(exist_ok=True)
            record: dict[str, Any] = {
                "run_id": new_run_id(), "card_path": str(card.path), "seed": card.run.seed,
                "events": card.run.events, "settings": card_settings(card),
                "fingerprint": fingerprint(card)}
            tmp = parts / (RUN_RECORD + ".tmp")
            tmp.write_text(json.dumps(record, indent=1))
            os.replace(tmp, parts / RUN_RECORD)
            return record["run_id"]
    except OSError as err:
        raise OutputError(f"cannot write the output {output}: {err.strerror or err} "
                          f"({err.filename or parts})") from None
    stored = read_record(parts)
    return None if stored is None else stored.get("run_id")


__all__ = ["COMPLETE", "NEW", "RESUME", "LaunchError", "OutputError", "card_settings",
           "check_output", "checked_output", "fingerprint", "prepare_output"]

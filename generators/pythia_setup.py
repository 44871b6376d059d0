"""Build Pythia instances from a card, and check every setting with Pythia itself.

Pythia writes its messages to the C++ standard output. While a setting is read or an
instance initialised we capture that output, so a rejected setting becomes one clear
:class:`~resim.card.CardError` naming the card key; during a run it goes to a log file so
it cannot garble the progress bar.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.metadata
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pythia8mc

from resim.card import Card, CardError, PythiaSetting

_libc = ctypes.CDLL(None)

#: Applied to every instance: no init listings, no event listings, no progress counters.
#: (Not ``Print:quiet``, which also silences the error messages we report.)
QUIET = (
    "Init:showProcesses = off", "Init:showMultipartonInteractions = off",
    "Init:showChangedSettings = off", "Init:showChangedParticleData = off",
    "Next:numberCount = 0", "Next:numberShowInfo = 0", "Next:numberShowProcess = 0",
    "Next:numberShowEvent = 0", "Next:numberShowLHA = 0", "Random:setSeed = on",
)


@functools.cache
def pythia_version() -> str:
    """The pythia8mc version (Pythia's own, plus the binding's release: ``8.317.2``)."""
    try:  # asking a Pythia instance means building one: a tenth of a second
        return importlib.metadata.version("pythia8mc")
    except importlib.metadata.PackageNotFoundError:
        return f"{pythia8mc.Pythia('', False).settings.parm('Pythia:versionNumber'):.3f}"


def _flush_all() -> None:
    sys.stdout.flush()
    _libc.fflush(None)  # C stdio buffers what Pythia's std::cout writes


@contextlib.contextmanager
def stdout_to(path: str | os.PathLike) -> Iterator[None]:
    """Send everything written to file descriptor 1 (Pythia's messages) to ``path``."""
    _flush_all()
    saved = os.dup(1)
    with open(path, "ab") as target:
        os.dup2(target.fileno(), 1)
    try:
        yield
    finally:
        _flush_all()
        os.dup2(saved, 1)
        os.close(saved)


@contextlib.contextmanager
def captured_stdout() -> Iterator[list[str]]:
    """Capture file descriptor 1; the list holds the text once the block ends."""
    out: list[str] = []
    with tempfile.NamedTemporaryFile("w+b") as tmp:
        with stdout_to(tmp.name):
            yield out
        tmp.seek(0)
        out.append(tmp.read().decode(errors="replace"))


def _clean(line: str) -> str:
    return line.strip().replace("PYTHIA ", "").replace("Error: ", "").rstrip(":").strip()


def pythia_message(text: str) -> str:
    """What Pythia complained about, on one line: its summary of a rejected setting, or
    the first error and the final abort of a failed initialisation."""
    lines = [line for line in text.splitlines() if "PYTHIA" in line]
    summary = [line for line in lines if "PYTHIA Error:" in line]
    if summary:
        return _clean(summary[0])
    errors = [_clean(line) for line in lines if "Error" in line or "Abort" in line]
    return "; ".join(dict.fromkeys(errors[:1] + errors[-1:])) or "Pythia gave no reason"


def allowed_range(pythia: pythia8mc.Pythia, name: str) -> str:
    """' (allowed: 0.1 ... 10.0)' for a numeric setting with limits, else ''."""
    for lookup in (pythia.settings.getParmMap, pythia.settings.getModeMap):
        entry = lookup(name).get(name.lower())
        if entry is not None and (entry.hasMin or entry.hasMax):
            lo = entry.valMin if entry.hasMin else "-inf"
            hi = entry.valMax if entry.hasMax else "inf"
            return f" (allowed: {lo} ... {hi})"
    return ""


def kind_problem(settings: pythia8mc.Settings, name: str, value: Any) -> str | None:
    """Why ``value`` (as written in a card) does not fit the kind of Pythia setting ``name``,
    or None. Pythia itself would truncate 1.5 to 1 for an integer setting, read a list as
    its first entry and take 0.5 for "off", all without a word."""
    vector = any(test(name) for test in (settings.isFVec, settings.isMVec, settings.isPVec,
                                          settings.isWVec))
    if value is None or vector:
        return None
    if isinstance(value, list):
        return "takes a single value, not a list"
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if settings.isMode(name) and not (number and float(value).is_integer()):
        return "takes an integer"
    if settings.isParm(name) and not number:
        return "takes a number"
    words = ("on", "off", "true", "false", "yes", "no")  # Pythia reads any other as off
    if settings.isFlag(name) and not (isinstance(value, bool) or value in (0, 1) or (
            isinstance(value, str) and value.lower() in words)):
        return "takes true or false (on/off)"
    return None


def configure(pythia: pythia8mc.Pythia, settings: Iterable[PythiaSetting], card: Path) -> None:
    """``readString`` each setting; a rejected one, or a value of the wrong kind for its
    setting, raises a CardError naming its key."""
    for s in settings:
        with captured_stdout() as out:
            ok = pythia.readString(s.line)
        if not ok:
            raise CardError(card, s.key, f"Pythia rejects '{s.line}': "
                            f"{pythia_message(out[0])}{allowed_range(pythia, s.name)}")
        problem = kind_problem(pythia.settings, s.name, s.value)
        if problem:
            raise CardError(card, s.key, f"the Pythia setting {s.name} {problem}, "
                            f"got {s.value!r}")


def initialize(pythia: pythia8mc.Pythia, card: Path, key: str, what: str) -> None:
    """``init()`` with Pythia's output captured; failure raises a CardError naming ``key``."""
    with captured_stdout() as out:
        ok = pythia.init()
    if not ok:
        raise CardError(card, key, f"Pythia could not initialise the {what}: "
                        f"{pythia_message(out[0])}")


def common_settings(card: Card) -> tuple[PythiaSetting, ...]:
    """Settings every instance shares: quiet output, the card's [pythia] and [decays]."""
    quiet = tuple(PythiaSetting("", line) for line in QUIET)
    return quiet + card.pythia + card.decay_settings()


def new_pythia() -> pythia8mc.Pythia:
    return pythia8mc.Pythia("", False)

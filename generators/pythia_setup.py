"""Build Pythia instances from a card, and check every setting with Pythia itself.

Pythia writes its messages to the C++ standard output. While a setting is read or an
instance initialised we capture that output, so a rejected setting becomes one clear
:class:`~resim.card.CardError` naming the card key; during a run it goes to a log file so
it cannot garble the progress bar.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import pythia8mc

from resim.card import Card, CardError, PythiaSetting

_libc = ctypes.CDLL(None)

#: Applied to every instance: no banner, no event listings, no progress counters.
QUIET = ("Print:quiet = on", "Next:numberCount = 0", "Random:setSeed = on")


def pythia_version() -> str:
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


def pythia_message(text: str) -> str:
    """The first thing Pythia complained about, on one line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if "Error" in line or "Abort" in line:
            return line.replace("PYTHIA ", "").replace("Error: ", "").rstrip(":").strip()
    return lines[-1] if lines else "no message"


def configure(pythia: pythia8mc.Pythia, settings: Iterable[PythiaSetting], card: Path) -> None:
    """``readString`` each setting; a rejected one raises a CardError naming its key."""
    for s in settings:
        with captured_stdout() as out:
            ok = pythia.readString(s.line)
        if not ok:
            raise CardError(card, s.key, f"Pythia rejects '{s.line}': {pythia_message(out[0])}")


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

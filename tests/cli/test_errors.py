"""One family of errors: every error resim raises on purpose is a ResimError with an exit
code, and every command reports any error as one line (``--debug`` adds the traceback)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from resim.cli import main
from resim.errors import FailureError, ResimError

CARDS = Path(__file__).parents[1] / "cards"


def test_every_error_class_joins_the_family_with_its_exit_code():
    from resim.card import CardError
    from resim.convert import ConvertError
    from resim.dataset import DatasetError
    from resim.generate import LaunchError, OutputError, WriteError
    from resim.generators.hard_process import HardProcessError
    from resim.parallel import MpiUnavailableError
    from resim.schema import SchemaError
    from resim.train.config import ConfigError
    from resim.train.loop import RunError
    from resim.truth import TooManyObjectsError

    asked = (CardError, SchemaError, ConfigError, OutputError, LaunchError, DatasetError,
             ConvertError, RunError, MpiUnavailableError, TooManyObjectsError)
    for cls in asked:
        assert issubclass(cls, ResimError) and cls.exit_code == 2, cls
    for cls in (WriteError, HardProcessError):
        assert issubclass(cls, FailureError) and cls.exit_code == 1, cls
    # The builtin bases callers may catch stay.
    assert issubclass(DatasetError, OSError) and issubclass(CardError, ValueError)
    assert issubclass(ConvertError, ValueError)


def test_an_unexpected_error_is_one_line_and_its_traceback_a_file(monkeypatch, tmp_path):
    import resim.cli

    def broken(*args, **kwargs):
        raise RuntimeError("something resim did not foresee\nsecond line")

    monkeypatch.setattr(resim.cli, "shipped_cards", broken)
    monkeypatch.delenv("RESIM_DEBUG", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    result = CliRunner().invoke(main, ["cards"])
    assert result.exit_code == 1
    message = result.stderr.strip()
    assert "\n" not in message and "Traceback" not in message
    assert message.startswith("error: unexpected RuntimeError: something resim did not "
                              "foresee (a bug in resim; the traceback is in ")
    where = Path(message.split("the traceback is in ")[1].split(",")[0])
    assert where.parent == tmp_path
    assert "Traceback" in where.read_text() and "broken" in where.read_text()

    result = CliRunner().invoke(main, ["--debug", "cards"])
    assert isinstance(result.exception, RuntimeError)  # raised, so Python prints it
    os.environ.pop("RESIM_DEBUG")  # --debug set it for the ranks and workers to come


@pytest.mark.parametrize(("error", "code"), [
    (ResimError("x.toml: run.events: must be >= 1"), 2),
    (FailureError("rank 0: cannot write"), 1),
    (FileNotFoundError(2, "No such file or directory", "/no/where.png"), 2),
    (OSError(28, "No space left on device", "/full/disk.h5"), 1),
    (KeyboardInterrupt(), 130),
    (MemoryError("Unable to allocate 23.8 GiB for an array with shape (64, 100000000)"), 1),
])
def test_errors_a_command_meets_are_one_line_with_their_exit_code(monkeypatch, error, code):
    import resim.cli

    def fails(*args, **kwargs):
        raise error

    monkeypatch.setattr(resim.cli, "shipped_cards", fails)
    monkeypatch.delenv("RESIM_DEBUG", raising=False)
    result = CliRunner().invoke(main, ["cards"])
    assert result.exit_code == code, result.output
    message = result.stderr.strip()
    assert message.startswith("error: ") and "\n" not in message
    if isinstance(error, OSError):
        assert message == f"error: {error.filename}: {error.strerror}"
    if isinstance(error, MemoryError):  # was "unexpected MemoryError ... a bug in resim"
        assert message.startswith("error: out of memory: Unable to allocate 23.8 GiB")


def test_a_reader_that_stops_reading_ends_the_command_quietly(tmp_path):
    """`resim configs | head -3` printed "error: Broken pipe" (exit code 1)."""
    proc = subprocess.Popen([sys.executable, "-m", "resim.cli", "configs"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # before the command writes its first line (imports take longer)
    _, err = proc.communicate(timeout=120)
    assert (proc.returncode, err) == (128 + signal.SIGPIPE, b"")


def test_command_line_mistakes_stay_click_s_usage_errors():
    result = CliRunner().invoke(main, ["inspect"])
    assert result.exit_code == 2 and "Missing argument" in result.stderr


def test_mpiexec_without_mpi4py_is_one_line_saying_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PMI_SIZE", "2")  # as mpiexec sets it
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # as if not installed
    monkeypatch.delenv("RESIM_DEBUG", raising=False)
    out = tmp_path / "smoke.h5"
    result = CliRunner().invoke(main, ["generate", "--card", "smoke", "--output", str(out),
                                       "--quiet"])
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert "\n" not in message and "bug in resim" not in message
    assert message.startswith("error: started by an MPI launcher (PMI_SIZE is set) but "
                              "mpi4py cannot be imported (")
    assert message.endswith("pip install 'resim[mpi]' in this environment, or run without "
                            "mpiexec/srun")
    assert not out.exists()
    monkeypatch.setenv("PMI_RANK", "1")  # the other ranks say nothing
    result = CliRunner().invoke(main, ["generate", "--card", "smoke", "--output", str(out),
                                       "--quiet"])
    assert result.exit_code == 2 and result.stderr == "" and not out.exists()


def test_a_hard_event_with_too_many_objects_names_the_card_key(monkeypatch, tmp_path):
    import resim.truth

    # Group ids number 16 objects per event; a QCD event has 2 partons: allow 1.
    monkeypatch.setattr(resim.truth, "MAX_OBJECTS", 1)
    monkeypatch.delenv("RESIM_DEBUG", raising=False)
    card = CARDS / "qcd_small.toml"
    out = tmp_path / "qcd.h5"
    result = CliRunner().invoke(main, ["generate", "--card", str(card), "--events", "2",
                                       "--output", str(out), "--quiet"])
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert re.fullmatch(
        rf"error: {re.escape(str(card))}: objects\.pdg: hard event \d has 2 objects "
        r"\(hard-process particles with \|PDG id\| in \[1, 2, 3, 4, 5, 21\]\), more than "
        r"the 1 a group id numbers per event: list fewer PDG ids in \[objects\] pdg",
        message), message
    assert not out.exists()  # and no "--resume": the same card meets the same event again

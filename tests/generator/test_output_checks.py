"""The output is checked before Pythia is set up, and a run that fails says that --resume
continues it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

import resim.generate
from resim.cli import main

CARDS = Path(__file__).parents[1] / "cards"
SMALL = ["--card", "smoke", "--events", "2", "--quiet"]


@pytest.fixture
def no_set_up(monkeypatch):
    """Fail the test if Pythia would be set up."""
    def refuse(card):
        raise AssertionError("Pythia was set up before the output was checked")

    monkeypatch.setattr(resim.generate, "Pipeline", refuse)


def generate(*args) -> object:
    return CliRunner().invoke(main, ["generate", *map(str, args)])


def one_line(result) -> str:
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert "\n" not in message and message.startswith("error: "), message
    return message


def test_output_problems_are_errors_before_set_up_and_create_nothing(tmp_path, no_set_up):
    missing = tmp_path / "typo" / "deeper"
    message = one_line(generate(*SMALL, "--output", missing / "x.h5"))
    assert message == (f"error: the folder {missing} does not exist (the output is "
                       f"{missing / 'x.h5'}); create it first or fix the path: resim "
                       "creates no folders")
    assert not (tmp_path / "typo").exists()
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    assert "is a file, not a folder" in one_line(generate(*SMALL, "--output",
                                                          a_file / "x.h5"))
    assert "is a folder; give the output a file name" in one_line(
        generate(*SMALL, "--output", tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_exists_names_what_exists(tmp_path, no_set_up):
    out = tmp_path / "x.h5"
    Path(f"{out}.parts").mkdir()
    message = one_line(generate(*SMALL, "--output", out))
    assert f"{out}.parts exists (an unfinished run" in message and f"{out} exists" not in message
    assert "--resume" in message and "--overwrite" in message
    out.write_bytes(b"")
    assert f"error: {out} exists; pass --resume" in one_line(generate(*SMALL, "--output", out))


def test_an_unwritable_location_is_an_error_before_set_up(tmp_path, no_set_up):
    ro = tmp_path / "ro"
    ro.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,ro", "tmpfs", str(ro)],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {mount.stderr.strip()}")
    try:
        message = one_line(generate(*SMALL, "--output", ro / "x.h5"))
        assert message == (f"error: cannot write the output {ro / 'x.h5'}: Read-only file "
                           f"system ({ro})")
    finally:
        subprocess.run(["umount", str(ro)], check=True)


def test_a_folder_given_as_card_says_so(tmp_path):
    message = one_line(generate("--card", tmp_path, "--output", tmp_path / "x.h5"))
    assert message == f"error: {tmp_path}: a folder, not a card file"


def test_a_run_that_fails_says_resume_continues_it(tmp_path, monkeypatch):
    out = tmp_path / "x.h5"
    real = resim.generate.Pipeline.block
    calls = []

    def block(self, first, last):
        calls.append(first)
        if len(calls) == 3:
            raise RuntimeError("the detector caught fire")
        return real(self, first, last)

    monkeypatch.setattr(resim.generate.Pipeline, "block", block)
    monkeypatch.delenv("RESIM_DEBUG", raising=False)
    card = ["--card", CARDS / "resume.toml", "--events", "12", "--output", out, "--quiet"]
    result = generate(*card)
    assert result.exit_code == 1
    message = result.stderr.strip()
    assert "\n" not in message and "Traceback" not in message
    assert message.startswith("error: unexpected RuntimeError: the detector caught fire")
    assert message.endswith(f"the hard events finished before are kept in {out}.parts/: fix "
                            "the cause and rerun with --resume to continue")
    monkeypatch.setattr(resim.generate.Pipeline, "block", real)
    result = generate(*card, "--resume")
    assert result.exit_code == 0, result.output
    assert "resuming" in result.stderr and "4 of 12 hard events kept" in result.stderr

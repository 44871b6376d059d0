"""The output is checked before Pythia is set up; a resume compares the card's settings
(not its text) and says what differs; defaults a card relies on are shown; a run that
fails says that --resume continues it."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

import resim.generate
from resim.card import load_card
from resim.cli import main
from resim.output import card_settings, fingerprint, setting_changes

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


def test_existing_output_is_not_overwritten_without_asking(generate_card, tmp_path):
    out = generate_card("smoke", events=2)
    runner = CliRunner()
    result = runner.invoke(main, ["generate", "--card", "smoke", "--events", "2",
                                  "--output", str(out)])
    assert result.exit_code == 2
    assert "exists; pass --resume" in result.stderr and "--overwrite" in result.stderr
    result = runner.invoke(main, ["generate", "--card", "smoke", "--events", "2", "--quiet",
                                  "--output", str(out), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert "resim: " in result.output and "groups" in result.output


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
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the traceback goes
    card = ["--card", CARDS / "resume.toml", "--events", "12", "--output", out, "--quiet"]
    result = generate(*card)
    assert result.exit_code == 1
    message = result.stderr.strip()
    assert "\n" not in message and "Traceback" not in message
    assert message.startswith("error: unexpected RuntimeError: the detector caught fire")
    assert message.endswith(f"the hard events finished before are kept in {out}.parts/: fix "
                            "the cause and rerun with --resume to continue")
    (traceback,) = tmp_path.glob("resim-traceback-*.txt")
    assert "the detector caught fire" in traceback.read_text()
    monkeypatch.setattr(resim.generate.Pipeline, "block", real)
    result = generate(*card, "--resume")
    assert result.exit_code == 0, result.output
    assert "resuming" in result.stderr and "4 of 12 hard events kept" in result.stderr


def test_resume_compares_settings_not_text_and_says_what_differs(tmp_path):
    card = tmp_path / "card.toml"
    text = (CARDS / "resume.toml").read_text().replace("events = 120", "events = 4")
    card.write_text(text)
    out = tmp_path / "x.h5"
    assert generate("--card", card, "--output", out, "--quiet").exit_code == 0
    out.unlink()  # as if killed before the data set was written

    # Comments, spacing and the order of tables are not settings.
    card.write_text("# edited\n" + text.replace("pt_min = 300.0", "pt_min   =   300.0  # GeV"))
    result = generate("--card", card, "--output", out, "--quiet", "--resume")
    assert result.exit_code == 0, result.output
    out.unlink()

    card.write_text(text.replace("pt_min = 300.0", "pt_min = 350.0").replace(
        "[variations.fsr_up]", "[variations.fsr_upper]"))
    message = one_line(generate("--card", card, "--output", out, "--resume", "--seed", "3",
                                "--events", "5"))
    assert message.startswith(f"error: {out} was made with another card, seed or number of "
                              "events, so --resume cannot continue it: seed 16 (now 3); "
                              "events 4 (now 5); card settings: ")
    for change in ("variations.fsr_up removed", "variations.fsr_upper added",
                   "jets.pt_min 300.0 -> 350.0"):
        assert change in message
    card.write_text(text)
    assert "seed 16 (now 17)" in one_line(generate("--card", card, "--output", out, "--resume",
                                                   "--seed", "17"))


def test_a_run_recorded_by_an_older_resim_resumes_by_its_text_fingerprint(tmp_path,
                                                                           no_set_up):
    card = load_card(CARDS / "resume.toml")
    out = tmp_path / "x.h5"
    parts = Path(f"{out}.parts")
    parts.mkdir()
    (parts / "run.json").write_text(json.dumps({
        "fingerprint": fingerprint(card), "card_path": str(card.path), "seed": card.run.seed,
        "events": card.run.events}))
    edited = tmp_path / "edited.toml"
    edited.write_text("# a comment\n" + card.text)
    message = one_line(generate("--card", edited, "--output", out, "--resume"))
    assert "card text (the run's record, from an older resim, keeps only a hash" in message


def test_settings_gained_since_a_run_at_their_defaults_are_no_change():
    settings = card_settings(load_card("smoke"))
    older = {k: v for k, v in settings.items() if k != "jets.match_radius"}
    from resim.output import _flatten

    now, defaults = _flatten(load_card("smoke"))
    assert setting_changes(older, now, defaults) == []
    now["jets.match_radius"] = 0.4
    assert setting_changes(older, now, defaults) == ["jets.match_radius added"]


def test_a_card_without_run_prints_the_defaults_it_uses(tmp_path, no_set_up):
    text = (CARDS / "resume.toml").read_text()
    jets = "[jets]\npt_min = 300.0\nabs_eta_max = 2.5\n"
    assert jets in text
    card = tmp_path / "norun.toml"
    card.write_text("[hard_process]" + text.split("[hard_process]")[1].replace(jets, ""))
    out = tmp_path / "o.h5"
    out.write_text("")  # an existing output stops the run right after the note
    result = generate("--card", card, "--output", out)
    assert result.stderr.splitlines()[0] == (
        f"note: {card} leaves unset, so resim uses: run.events = 100, run.seed = 1, [jets] "
        "antikt R = 0.8, pT > 500 GeV, |eta| < 2, constituents above 0 GeV")
    result = generate("--card", card, "--events", "3", "--seed", "2", "--output", out)
    assert result.stderr.splitlines()[0] == (
        f"note: {card} leaves unset, so resim uses: [jets] antikt R = 0.8, pT > 500 GeV, "
        "|eta| < 2, constituents above 0 GeV")
    assert "note:" not in generate(*SMALL, "--output", out).stderr  # shipped cards set all


def test_check_names_the_defaults_a_card_uses(tmp_path):
    card = tmp_path / "norun.toml"
    card.write_text("[hard_process]" + (CARDS / "resume.toml").read_text().split(
        "[hard_process]")[1])
    result = CliRunner().invoke(main, ["check", str(card)])
    assert result.exit_code == 0, result.output
    assert result.stderr == (f"note: {card} leaves unset, so resim uses: run.events = 100, "
                             'run.seed = 1, run.output = "resim.h5"\n')

"""Cards: parsing, defaults, overrides, and one clear error per bad card before any output."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from resim.card import CardError, load_card, shipped_cards
from resim.cli import main

CARDS = Path(__file__).parents[1] / "cards"
GOOD = (CARDS / "top_small.toml").read_text()


def test_every_shipped_card_parses_with_standard_variation_names():
    standard = {"nominal", "seed", "fsr_up", "fsr_down", "isr_up", "isr_down", "vincia", "tune",
                "hadronization", "cr"}
    assert {"qcd", "top", "wqq", "zqq", "hbb", "hcc", "hgg", "smoke"} <= set(shipped_cards())
    for name in shipped_cards():
        card = load_card(name)
        assert set(card.variation_names) <= standard, name
        if name != "smoke":
            assert set(card.variation_names) == standard, name
            assert (card.jets.radius, card.jets.pt_min, card.jets.pt_max) == (0.8, 500, 1000)
            assert card.jets.abs_eta_max == 2.0
        assert card.jets.constituent_pt_min == 0.5, name  # detector-like inputs, all cards


def test_labels_and_defaults():
    qcd = load_card("qcd")
    assert qcd.labels == ("q", "g")
    assert qcd.objects.label_of(21) == 1 and qcd.objects.label_of(-3) == 0
    top = load_card(CARDS / "top_small.toml")
    assert top.beams.ecm == 13600.0 and top.jets.algorithm == "antikt"
    assert top.variations[0].realizations == 1 and top.variations[0].stage == "shower"
    assert math.isclose(top.jets.match_dr, 0.8)
    lines = [s.line for s in top.decay_settings()]
    assert lines == ["6:onMode = off", "6:onIfMatch = 5 24", "24:onMode = off",
                     "24:onIfAny = 1 2 3 4 5"]


def test_overrides_win_over_the_card():
    card = load_card(CARDS / "top_small.toml").with_overrides(events=7, seed=99, output="x.h5")
    assert (card.run.events, card.run.seed, str(card.run.output)) == (7, 99, "x.h5")
    with pytest.raises(CardError, match="--events: must be an integer >= 1, got 0"):
        card.with_overrides(events=0)
    # more hard events than int64 group ids (event * 16 + k) can number
    with pytest.raises(CardError, match="--events: must be an integer <= 576460752303423488"):
        card.with_overrides(events=10**20)
    with pytest.raises(CardError, match="--seed: must be an integer <= 9223372036854775807"):
        card.with_overrides(seed=2**63)


BAD_CARDS = [
    # (what to change in the good card, key path named in the error, words in the error)
    (("[jets]", "[jets]\ncone = 0.4"), "jets.cone", "unknown key"),
    (("[run]", "[run]\nspeed = 2"), "run.speed", "unknown key"),
    (("pt_min = 500.0", 'pt_min = "high"'), "jets.pt_min", "must be a number"),
    (("events = 100", "events = 1.5"), "run.events", "must be an integer"),
    (("events = 100", "events = 1152921504606846976"), "run.events", "must be an integer <= "),
    (("pt_min = 500.0", "pt_min = -5.0"), "jets.pt_min", "must be >= 0.0"),
    # NaN passes every bound (nan < 0 is false): refused wherever it is written
    (("pt_min = 500.0", "pt_min = nan"), "jets.pt_min", "must be a number, got nan"),
    (("[jets]", "[jets]\nconstituent_pt_min = nan"), "jets.constituent_pt_min",
     "must be a number, got nan"),
    (("pt_min = 500.0", "pt_min = inf"), "jets.pt_min", "must be finite, got inf"),
    (("seed = 11", "seed = 9223372036854775808"), "run.seed",
     "must be an integer <= 9223372036854775807"),
    (("pt_max = 1000.0", "pt_max = 400.0"), "jets.pt_max", "must be above pt_min"),
    (("[variations.seed]", "[variations.seed]\nrealizations = 0"),
     "variations.seed.realizations", "must be an integer >= 1"),
    (("[variations.seed]", '[variations.seed]\nstage = "parton"'),
     "variations.seed.stage", "must be one of"),
    (('"TimeShower:renormMultFac" = 0.25', '"TimeShower:renormMultFak" = 0.25'),
     'variations.fsr_up.settings."TimeShower:renormMultFak"', "Pythia rejects"),
    (('"TimeShower:renormMultFac" = 0.25', '"TimeShower:renormMultFac" = 100.0'),
     'variations.fsr_up.settings."TimeShower:renormMultFac"', "out of range"),
    (('"TimeShower:renormMultFac" = 4.0', '"PartonShowers:model" = 3'),
     'variations.fsr_down.settings."PartonShowers:model"', "out of range"),
    (("[hard_process]", '[hard_process]\nlhe = "missing.lhe.gz"'),
     "hard_process.lhe", "Les Houches file not found"),
    (("labels = { top = [6] }", "labels = { top = [5] }"), "objects.labels",
     "must have exactly one label"),
    (("[variations.fsr_down]", '[variations.hadronization]\nstage = "hadronization"\n'
      'settings = { "TimeShower:alphaSvalue" = 0.12 }\n[variations.fsr_down]'),
     'variations.hadronization.settings."TimeShower:alphaSvalue"', "not a hadronization"),
    (("[decays.6]", "[decays.top]"), "decays.top", "keyed by PDG id"),
    # Values Pythia would silently misread: 1.5 as 1, a list as its first entry, 0.5 as off.
    (('"TimeShower:renormMultFac" = 0.25', '"TimeShower:renormMultFac" = [0.25, 0.5]'),
     'variations.fsr_up.settings."TimeShower:renormMultFac"', "takes a single value"),
    (('"TimeShower:renormMultFac" = 4.0', '"PartonShowers:model" = 1.5'),
     'variations.fsr_down.settings."PartonShowers:model"', "takes an integer, got 1.5"),
    (("[decays.6]", '[pythia]\nsettings = { "PartonLevel:MPI" = 0.5 }\n[decays.6]'),
     'pythia.settings."PartonLevel:MPI"', "takes true or false"),
    (("[decays.6]", '[pythia]\nsettings = { "PartonLevel:MPI" = "maybe" }\n[decays.6]'),
     'pythia.settings."PartonLevel:MPI"', "takes true or false"),
    (('"PhaseSpace:pTHatMin" = 450.0', '"PhaseSpace:pTHatMin" = "450 GeV"'),
     'hard_process.settings."PhaseSpace:pTHatMin"', "takes a number, got '450 GeV'"),
]


@pytest.mark.parametrize(("change", "key", "words"), BAD_CARDS, ids=[b[1] for b in BAD_CARDS])
def test_bad_card_is_one_line_naming_file_and_key_and_writes_nothing(tmp_path, change, key,
                                                                     words):
    old, new = change
    assert old in GOOD
    card = tmp_path / "bad.toml"
    card.write_text(GOOD.replace(old, new, 1))
    out = tmp_path / "out.h5"
    result = CliRunner().invoke(main, ["generate", "--card", str(card), "--output", str(out)])
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert "\n" not in message
    assert message.startswith(f"error: {card}: {key}: ")
    assert words in message
    assert list(tmp_path.iterdir()) == [card]


def test_a_file_that_is_not_les_houches_is_a_card_error(tmp_path):
    (tmp_path / "events.lhe").write_text("<html>not events</html>\n")
    card = tmp_path / "bad.toml"
    card.write_text(GOOD.replace('settings = { "Top:gg2ttbar"', 'lhe = "events.lhe"\n#', 1))
    result = CliRunner().invoke(main, ["generate", "--card", str(card), "--output",
                                       str(tmp_path / "o.h5")])
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"error: {card}: hard_process.lhe: {tmp_path}/events.lhe "
                                     "has no <event> blocks: not a Les Houches event file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml", "events.lhe"]


def test_a_broken_gzip_les_houches_file_is_a_card_error(tmp_path):
    (tmp_path / "events.lhe.gz").write_text("<LesHouchesEvents><event>\n")  # not gzipped
    card = tmp_path / "bad.toml"
    card.write_text(GOOD.replace('settings = { "Top:gg2ttbar"', 'lhe = "events.lhe.gz"\n#', 1))
    result = CliRunner().invoke(main, ["generate", "--card", str(card), "--output",
                                       str(tmp_path / "o.h5")])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {card}: hard_process.lhe: cannot read "
                                    f"{tmp_path}/events.lhe.gz: Not a gzipped file")
    assert "\n" not in result.stderr.strip()
    assert not (tmp_path / "o.h5").exists() and not (tmp_path / "o.h5.parts").exists()


def test_settings_of_the_right_kind_are_accepted(tmp_path):
    card = tmp_path / "fine.toml"
    card.write_text(GOOD.replace("[decays.6]", '[pythia]\nsettings = { "PartonLevel:MPI" = '
                                 '"on", "Tune:pp" = 14.0, "MultipartonInteractions:pT0Ref" = 2, '
                                 '"PDF:pSet" = 13 }\n[decays.6]'))
    result = CliRunner().invoke(main, ["check", str(card)])
    assert result.exit_code == 0, result.output


def test_not_toml_and_missing_card(tmp_path):
    card = tmp_path / "broken.toml"
    card.write_text("[run\nevents = 3")
    result = CliRunner().invoke(main, ["generate", "--card", str(card)])
    assert result.exit_code == 2 and "not valid TOML" in result.stderr
    result = CliRunner().invoke(main, ["generate", "--card", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2 and "no such card file" in result.stderr


def test_a_setting_pythia_accepts_but_cannot_initialise_names_the_variation(tmp_path):
    card = tmp_path / "bad.toml"
    # A valid setting that makes the downstream initialisation fail: no PDF set 999.
    card.write_text(GOOD.replace('"TimeShower:renormMultFac" = 4.0',
                                 '"PDF:pSet" = "LHAPDF6:NoSuchSet"', 1))
    result = CliRunner().invoke(main, ["generate", "--card", str(card), "--output",
                                       str(tmp_path / "o.h5")])
    assert result.exit_code == 2
    assert f"{card}: variations.fsr_down: Pythia could not initialise" in result.stderr
    assert not (tmp_path / "o.h5").exists() and not (tmp_path / "o.h5.parts").exists()


def test_check_command_accepts_every_shipped_card():
    for name in ("smoke", "qcd"):
        result = CliRunner().invoke(main, ["check", name])
        assert result.exit_code == 0, result.output
        assert "ok" in result.output

"""The standard-variations preset: cards include it, override one, and a study restricts
the parsed card (its shard text remaking the same card)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from resim.card import CardError, load_card, parse_card, restrict_variations

TOP = load_card("top")
HEAD = TOP.text[:TOP.text.index("[variations]")]


def card(tmp_path: Path, variations: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(HEAD + variations)
    return path


def test_the_preset_gives_the_ten_standard_variations_in_order(tmp_path: Path) -> None:
    c = load_card(card(tmp_path, '[variations]\npreset = "standard"\n'))
    assert c.variation_names == ("nominal", "seed", "fsr_up", "fsr_down", "isr_up",
                                 "isr_down", "vincia", "tune", "hadronization", "cr")
    assert c.variations == TOP.variations
    hadronization = c.variations[8]
    assert hadronization.stage == "hadronization"
    assert "StringZ:aLund = 0.3" in [s.line for s in hadronization.settings]


def test_a_card_replaces_one_in_its_place_and_adds_its_own(tmp_path: Path) -> None:
    c = load_card(card(tmp_path, '[variations]\npreset = "standard"\n\n[variations.fsr_up]\n'
                       'settings = { "TimeShower:renormMultFac" = 0.5 }\n\n'
                       '[variations.extra]\nrealizations = 2\n'))
    assert c.variation_names == (*TOP.variation_names, "extra")
    fsr_up = c.variations[2]
    assert [s.line for s in fsr_up.settings] == ["TimeShower:renormMultFac = 0.5"]
    assert fsr_up.settings[0].key == 'variations.fsr_up.settings."TimeShower:renormMultFac"'
    assert c.variations[:2] == TOP.variations[:2] and c.variations[3:10] == TOP.variations[3:]
    assert c.variations[10].realizations == 2


def test_an_unknown_preset_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(CardError, match=r"variations\.preset: must be one of standard; "
                       r"got 'herwig'"):
        load_card(card(tmp_path, '[variations]\npreset = "herwig"\n'))


def test_restricting_the_parsed_card_keeps_order_and_settings() -> None:
    keep = ["cr", "nominal", "fsr_up"]
    c = TOP.with_variations(keep)
    assert c.variation_names == ("nominal", "fsr_up", "cr")
    assert c.variations == tuple(v for v in TOP.variations if v.name in keep)
    assert (c.jets, c.objects, c.decays, c.run) == (TOP.jets, TOP.objects, TOP.decays, TOP.run)
    with pytest.raises(CardError, match="no variation herwig"):
        TOP.with_variations(["nominal", "herwig"])


def test_the_restricted_text_writes_the_preset_out_and_remakes_the_card(tmp_path: Path
                                                                         ) -> None:
    path = card(tmp_path, '[variations]\npreset = "standard"\n\n[variations.fsr_up]\n'
                'settings = { "TimeShower:renormMultFac" = 0.5 }\n')
    full = load_card(path)
    keep = ["nominal", "fsr_up", "cr"]
    text = restrict_variations(full.text, keep)
    assert "preset" not in tomllib.loads(text)["variations"]
    assert re.findall(r"^\[variations\.(\w+)\]", text, re.M) == keep
    assert parse_card(tomllib.loads(text), path, text).variations == \
        full.with_variations(keep).variations


def test_a_restriction_keeps_the_base_of_what_it_keeps() -> None:
    card = load_card(Path(__file__).parents[1] / "cards" / "detector.toml")
    assert card.with_variations(["nominal", "redetect"]).variations[1].base == "nominal"
    with pytest.raises(CardError, match=r"variations\.redetect\.base: re-uses 'nominal', "
                       "which the restriction leaves out"):
        card.with_variations(["fsr_up", "redetect"])

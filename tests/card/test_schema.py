"""resim.schema: keys declared once on a dataclass and read with their checks."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from resim.schema import SchemaError, Table, declared, declared_keys, read


@dataclass(frozen=True)
class Inner:
    mode: str = declared("a", choices=("a", "b"))


@dataclass(frozen=True)
class Outer:
    count: int = declared(3, minimum=1)
    limit: int | None = declared(None, minimum=0)
    scale: float = declared(1.0, above=0.0, at_most=2.0)
    edges: tuple[float, float] = declared((0.0, 1.0), length=2, minimum=0.0)
    ids: tuple[int, ...] = declared((1,), minimum=1)
    names: tuple[str, ...] = declared(())
    where: Path = declared(Path("x.h5"))
    on: bool = declared(False)
    inner: Inner = declared(Inner())
    hand: str = "by hand"  # not a key
    extra: tuple[int, ...] = field(default=())


def outer(raw: dict, **given) -> Outer:
    return read(Outer, Table("f.toml", raw), **given)


def test_defaults_types_and_nested_tables() -> None:
    assert outer({}) == Outer()
    o = outer({"count": 5, "limit": 0, "scale": 2, "edges": [1, 2], "ids": [4, 5],
               "names": ["p"], "where": "y.h5", "on": True, "inner": {"mode": "b"}})
    assert o == Outer(5, 0, 2.0, (1.0, 2.0), (4, 5), ("p",), Path("y.h5"), True, Inner("b"))
    assert isinstance(o.scale, float) and o.hand == "by hand"
    assert outer({"count": 7}, hand="h", count=2) == Outer(count=2, hand="h")
    assert declared_keys(Outer) == ("count", "limit", "scale", "edges", "ids", "names",
                                    "where", "on", "inner")


@pytest.mark.parametrize(("raw", "message"), [
    ({"cont": 1}, "f.toml: cont: unknown key (allowed here: count, limit, scale, edges, ids, "
                  "names, where, on, inner)"),
    ({"hand": "x"}, "f.toml: hand: unknown key"),
    ({"count": 0}, "f.toml: count: must be an integer >= 1, got 0"),
    ({"count": 1.5}, "f.toml: count: must be an integer, got 1.5"),
    ({"count": True}, "f.toml: count: must be an integer, got True"),
    ({"limit": -1}, "f.toml: limit: must be an integer >= 0, got -1"),
    ({"scale": 0}, "f.toml: scale: must be > 0.0, got 0.0"),
    ({"scale": 3.0}, "f.toml: scale: must be <= 2.0, got 3.0"),
    ({"scale": math.nan}, "f.toml: scale: must be a number, got nan"),
    ({"scale": math.inf}, "f.toml: scale: must be finite, got inf"),
    ({"edges": [0.0, math.nan]}, "f.toml: edges: must be a number, got [0.0, nan]"),
    ({"edges": [0.0, math.inf]}, "f.toml: edges: must be finite numbers, got [0.0, inf]"),
    ({"inner": {"mode": "a", "w": math.nan}}, "f.toml: inner.w: must be a number, got nan"),
    ({"edges": [1]}, "f.toml: edges: must be a list of 2 numbers, got [1]"),
    ({"edges": [-1, 1]}, "f.toml: edges: must be >= 0.0, got -1.0"),
    ({"ids": [0]}, "f.toml: ids: must be a list of integers >= 1, got [0]"),
    ({"names": [1]}, "f.toml: names: must be a list of strings, got [1]"),
    ({"where": 3}, "f.toml: where: must be a string, got 3"),
    ({"on": 1}, "f.toml: on: must be true or false, got 1"),
    ({"inner": {"mode": "c"}}, "f.toml: inner.mode: must be one of a, b; got 'c'"),
    ({"inner": {"x": 1}}, "f.toml: inner.x: unknown key (allowed here: mode)"),
])
def test_each_mistake_is_one_line_naming_the_key(raw: dict, message: str) -> None:
    with pytest.raises(SchemaError) as err:
        outer(raw)
    assert str(err.value).startswith(message)


@dataclass(frozen=True)
class Needed:
    card: str = declared(required=True)
    events: int = declared(minimum=1, required=True)


def test_a_required_key_has_no_default_and_is_missing_when_left_out() -> None:
    assert read(Needed, Table("f.toml", {"card": "top", "events": 2})) == Needed("top", 2)
    with pytest.raises(TypeError):
        Needed()  # type: ignore[call-arg]
    for raw, key in (({"events": 2}, "card"), ({"card": "top"}, "events")):
        with pytest.raises(SchemaError, match=f"^f.toml: {key}: missing$"):
            read(Needed, Table("f.toml", raw))


def _positive_total(t: Table, name: str, value: tuple[float, ...]) -> None:
    if sum(value) <= 0:
        t.fail(name, f"must add up to more than 0, got {list(value)}")


def _names(t: Table, name: str, default: dict) -> dict:
    table = t.table(name)
    return {key: table.string(key, None, required=True) for key in table} or default


@dataclass(frozen=True, kw_only=True)
class Sectioned:
    title: str = declared(required=True)
    weights: tuple[float, ...] = declared((1.0,), length=1, check=_positive_total)
    rate: float = declared(section="limits", required=True, above=0.0)
    rate_cap: float = declared(9.0, section="limits", key="cap")
    inner: Inner = declared(section="limits", required=True)
    names: dict = declared(default_factory=dict, reader=_names)


def test_sections_keys_readers_and_checks() -> None:
    raw = {"title": "t", "limits": {"rate": 2, "cap": 3, "inner": {"mode": "b"}},
           "names": {"a": "x"}}
    s = read(Sectioned, Table("f.toml", raw))
    assert s == Sectioned(title="t", rate=2.0, rate_cap=3.0, inner=Inner("b"),
                          names={"a": "x"})
    assert declared_keys(Sectioned) == ("title", "weights", "limits", "names")
    empty = read(Sectioned, Table("f.toml", {"title": "t", "limits": {"rate": 1,
                                                                       "inner": {}}}))
    assert (empty.names, empty.rate_cap, empty.weights) == ({}, 9.0, (1.0,))


@pytest.mark.parametrize(("raw", "message"), [
    ({"limits": {"rate": 1, "inner": {}}}, "f.toml: title: missing"),
    ({"title": "t", "limits": {"inner": {}}}, "f.toml: limits.rate: missing"),
    ({"title": "t", "limits": {"rate": 1}}, "f.toml: limits.inner: missing section"),
    ({"title": "t", "limits": {"rate": 1, "inner": {}, "rate_cap": 1}},
     "f.toml: limits.rate_cap: unknown key (allowed here: rate, cap, inner)"),
    ({"title": "t", "rate": 1}, "f.toml: rate: unknown key (allowed here: title, weights, "
                                "limits, names)"),
    ({"title": "t", "weights": [0], "limits": {"rate": 1, "inner": {}}},
     "f.toml: weights: must add up to more than 0, got [0.0]"),
    ({"title": "t", "limits": {"rate": 1, "inner": {}}, "names": {"a": 1}},
     "f.toml: names.a: must be a string, got 1"),
])
def test_section_mistakes_name_the_key_path(raw: dict, message: str) -> None:
    with pytest.raises(SchemaError) as err:
        read(Sectioned, Table("f.toml", raw))
    assert str(err.value) == message


def _card_error(section: str, raw: dict) -> str:
    import tomllib

    from resim.card import CardError, load_card, parse_card, resolve_card_path

    path = resolve_card_path("smoke")
    card = tomllib.loads(path.read_text())
    card[section] = {**card.get(section, {}), **raw}
    if section == "pileup":
        card["detector"] = {}
    with pytest.raises(CardError) as err:
        parse_card(card, path)
    assert load_card("smoke")  # the card itself is good
    return err.value.message


@pytest.mark.parametrize(("section", "raw", "allowed"), [
    ("detector", {"x": 1}, "preset, geometry, tracking, calorimeter, identification"),
    ("detector", {"calorimeter": {"x": 1}}, "fractions, ecal, hcal"),
    ("detector", {"tracking": {"d0_resolution": {"x": 1}}}, "eta_edges, pt_edges, values"),
    ("pileup", {"x": 1}, "preset, mu, mitigation, library, luminous_region, chs, puppi"),
    ("pileup", {"chs": {"x": 1}}, "dz_significance, d0_significance, dz_max"),
    ("hard_process", {"x": 1}, "settings, lhe"),
])
def test_card_tables_allow_the_keys_their_dataclasses_declare(section: str, raw: dict,
                                                               allowed: str) -> None:
    assert _card_error(section, raw) == f"unknown key (allowed here: {allowed})"


@pytest.mark.parametrize(("section", "allowed"), [
    ("study", "seeds, jobs, threads, variations, reference, set, heartbeat"),
    ("pretrain", "epochs, set, objectives, sizes"),
    ("finetune", "config, fractions, epochs, min_steps, baseline, set"),
    ("evaluate", "split, bootstrap, compare, bins"),
])
def test_study_sections_allow_the_keys_study_declares(section: str, allowed: str) -> None:
    from resim.study.spec import parse_study, resolve_study_path
    from resim.train.config import ConfigError

    text = resolve_study_path("tiny").read_text()
    assert f"\n[{section}]\n" in text
    with pytest.raises(ConfigError) as err:
        parse_study(text.replace(f"\n[{section}]\n", f"\n[{section}]\nx = 1\n"), "s.toml")
    assert str(err.value) == f"s.toml: {section}.x: unknown key (allowed here: {allowed})"

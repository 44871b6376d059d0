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
    ({"scale": math.nan}, "f.toml: scale: must be > 0.0, got nan"),
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

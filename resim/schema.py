"""Checked reading of TOML tables: every problem names the file and the key path.

Run cards (:mod:`resim.card`), training configs (:mod:`resim.train.config`) and study
files read their TOML through :class:`Table`, so a mistake anywhere is one line such as
``top.toml: jets.radius: must be > 0.0, got -1.0``. A dataclass declares its keys once,
as :func:`declared` fields (default, bounds, choices, the sub-table a key sits in, a
reader for what no type says, a check of what was read), and :func:`read` reads them:
the keys a table allows are those its dataclass declares. A card, its detector and
pileup, a training config and a study are each such a tree of dataclasses. Each reader
subclasses :class:`SchemaError` and :class:`Table` (setting ``Table.error``) to give its
errors their own type.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn, Self, TypeVar

from .errors import ResimError

T = TypeVar("T")


class SchemaError(ResimError, ValueError):
    """``<file>: <key path>: <what is wrong>``; ``source``, ``key`` and ``message`` apart."""

    def __init__(self, source: str | Path, key: str, message: str):
        self.source, self.key, self.message = str(source), key, message
        super().__init__(f"{source}: {key}: {message}" if key else f"{source}: {message}")


def _shown(value: Any) -> Any:
    """A value as the file spelled it (lists, not the tuples some callers hold)."""
    return [_shown(v) for v in value] if isinstance(value, tuple | list) else value


def _has_nan(value: Any) -> bool:
    """A NaN in ``value`` or its lists (TOML spells it ``nan``; every range check passes it)."""
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, list | tuple) and any(map(_has_nan, value))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class Table:
    """A TOML table and its key path (``prefix``, e.g. ``"variations.fsr_up."``)."""

    error: type[SchemaError] = SchemaError

    def __init__(self, source: str | Path, raw: Any, prefix: str = ""):
        self.source, self.raw, self.prefix = source, raw, prefix
        if not isinstance(raw, dict):
            self.fail("", f"must be a table, got {type(raw).__name__}")
        # Checked here, for every reader: no setting means NaN, and NaN passes any bound.
        for name, value in raw.items():
            if _has_nan(value):
                self.fail(name, f"must be a number, got {_shown(value)!r}")

    # -- where -------------------------------------------------------------------------
    def key(self, name: str) -> str:
        """The key path of ``name`` in this table (quoted where TOML needs quotes)."""
        quoted = name if re.match(r"^[A-Za-z0-9_-]+$", name) else f'"{name}"'
        return f"{self.prefix}{quoted}"

    @property
    def here(self) -> str:
        """This table's own key path."""
        return self.prefix.rstrip(".")

    def fail(self, name: str, message: str) -> NoReturn:
        """Raise this reader's error for key ``name`` of this table ("" for the table)."""
        raise self.error(self.source, self.key(name) if name else self.here, message)

    # -- structure -----------------------------------------------------------------------
    def __iter__(self) -> Iterator[str]:
        return iter(list(self.raw))

    def allow(self, *names: str) -> None:
        for name in self.raw:
            if name not in names:
                self.fail(name, f"unknown key (allowed here: {', '.join(names)})")

    def table(self, name: str, required: bool = False) -> Self:
        if name not in self.raw and required:
            self.fail(name, "missing section")
        return type(self)(self.source, self.raw.get(name, {}), self.key(name) + ".")

    # -- values --------------------------------------------------------------------------
    def _get(self, name: str, default: Any, kinds: tuple[type, ...], what: str,
             required: bool = False) -> Any:
        if name not in self.raw:
            if required:
                self.fail(name, "missing")
            return default
        value = self.raw[name]
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            self.fail(name, f"must be {what}, got {_shown(value)!r}")
        return value

    def integer(self, name: str, default: int | None, minimum: int | None = None,
                required: bool = False, at_most: int | None = None) -> Any:
        value = self._get(name, default, (int,), "an integer", required)
        if value is not None and minimum is not None and value < minimum:
            self.fail(name, f"must be an integer >= {minimum}, got {value}")
        if value is not None and at_most is not None and value > at_most:
            self.fail(name, f"must be an integer <= {at_most}, got {value}")
        return value

    def _check_range(self, name: str, value: float, minimum: float | None,
                     above: float | None, at_most: float | None, below: float | None) -> None:
        if minimum is not None and value < minimum:
            self.fail(name, f"must be >= {minimum}, got {value}")
        if above is not None and not value > above:
            self.fail(name, f"must be > {above}, got {value}")
        if at_most is not None and value > at_most:
            self.fail(name, f"must be <= {at_most}, got {value}")
        if below is not None and not value < below:
            self.fail(name, f"must be < {below}, got {value}")

    def number(self, name: str, default: float | None, minimum: float | None = None,
               above: float | None = None, at_most: float | None = None,
               below: float | None = None, required: bool = False) -> Any:
        value = self._get(name, default, (int, float), "a number", required)
        if value is None:
            return None
        value = float(value)
        if math.isinf(value) and not (isinstance(default, float) and math.isinf(default)):
            self.fail(name, f"must be finite, got {value}")
        self._check_range(name, value, minimum, above, at_most, below)
        return value

    def numbers(self, name: str, default: tuple[float, ...], length: int,
                minimum: float | None = None) -> tuple[float, ...]:
        value = self._get(name, default, (list, tuple), f"a list of {length} numbers")
        if len(value) != length or not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in value):
            self.fail(name, f"must be a list of {length} numbers, got {_shown(value)!r}")
        for v in value:
            if math.isinf(v):
                self.fail(name, f"must be finite numbers, got {_shown(value)!r}")
            self._check_range(name, float(v), minimum, None, None, None)
        return tuple(float(v) for v in value)

    def integers(self, name: str, default: tuple[int, ...] = (),
                 minimum: int | None = None) -> tuple[int, ...]:
        value = self._get(name, default, (list, tuple), "a list of integers")
        if not all(_is_int(v) and (minimum is None or v >= minimum) for v in value):
            bound = "" if minimum is None else f" >= {minimum}"
            self.fail(name, f"must be a list of integers{bound}, got {_shown(value)!r}")
        return tuple(value)

    def integer_lists(self, name: str) -> tuple[tuple[int, ...], ...]:
        value = self._get(name, [], (list,), "a list of lists of integers")
        if not all(isinstance(v, list) and v and all(map(_is_int, v)) for v in value):
            self.fail(name, f"must be a list of lists of integers, got {value!r}")
        return tuple(tuple(v) for v in value)

    def string(self, name: str, default: str | None, required: bool = False) -> Any:
        return self._get(name, default, (str,), "a string", required)

    def strings(self, name: str, default: tuple[str, ...],
                required: bool = False) -> tuple[str, ...]:
        value = self._get(name, default, (list, tuple), "a list of strings", required)
        if not all(isinstance(v, str) for v in value):
            self.fail(name, f"must be a list of strings, got {_shown(value)!r}")
        return tuple(value)

    def choice(self, name: str, default: str | None, allowed: Sequence[str],
               required: bool = False) -> Any:
        value = self.string(name, default, required)
        if value is not None and value not in allowed:
            self.fail(name, f"must be one of {', '.join(allowed)}; got {value!r}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        return self._get(name, default, (bool,), "true or false")


class Shipped:
    """TOML files shipped in a package folder, found by name (``smoke``) or by path."""

    def __init__(self, package: str, folder: str, kind: str, error: type[SchemaError]):
        self.package, self.folder, self.kind, self.error = package, folder, kind, error

    def _folder(self) -> Any:
        return resources.files(self.package).joinpath(*filter(None, self.folder.split("/")))

    def names(self) -> list[str]:
        return sorted(p.name[:-5] for p in self._folder().iterdir() if p.name.endswith(".toml"))

    def resolve(self, name: str | Path) -> Path:
        """``name`` if it is a file, else the shipped file of that name."""
        path = Path(name)
        if path.is_file():
            return path
        if path.is_dir():
            raise self.error(name, "", f"a folder, not a {self.kind} file")
        shipped = self._folder().joinpath(f"{path.stem}.toml")
        if path.suffix in ("", ".toml") and path.parent == Path(".") and shipped.is_file():
            return Path(str(shipped))
        raise self.error(name, "", f"no such {self.kind} file, and no shipped {self.kind} of "
                         f"that name (shipped: {', '.join(self.names())})")


    def read(self, name: str | Path) -> tuple[Path, str]:
        """The path :meth:`resolve` finds for ``name``, and its text; a file that cannot be
        read as text is this kind's one-line error, not a UnicodeDecodeError."""
        path = self.resolve(name)
        try:
            return path, path.read_text()
        except (OSError, UnicodeDecodeError) as err:
            reason = err.strerror if isinstance(err, OSError) else "not a text (UTF-8) file"
            raise self.error(path, "", f"cannot read the {self.kind}: {reason}") from None


# ------------------------------------------------------------------ declared keys

_RULE = "resim.schema"

#: A key's own reader, ``reader(table, key, default) -> value``, for a key whose reading
#: no type says (a table of Pythia settings, bins whose count another key sets).
Reader = Callable[[Table, str, Any], Any]
#: A check of a value once read, ``check(table, key, value)``: it calls ``table.fail``.
Check = Callable[[Table, str, Any], None]


@dataclass(frozen=True)
class Rule:
    """The checks of one declared key (see :func:`declared`)."""

    minimum: float | None = None
    above: float | None = None
    at_most: float | None = None
    below: float | None = None
    choices: tuple[str, ...] = ()
    length: int | None = None  # of a list of numbers
    required: bool = False  # "missing" (a table: "missing section") if not given
    section: str | None = None  # the key sits in this sub-table
    key: str | None = None  # the key's name, if not the field's
    reader: Reader | None = None
    check: Check | None = None


def declared(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING,
        minimum: float | None = None,
        above: float | None = None, at_most: float | None = None, below: float | None = None,
        choices: Sequence[str] = (), length: int | None = None, required: bool = False,
        section: str | None = None, key: str | None = None, reader: Reader | None = None,
        check: Check | None = None) -> Any:
    """A dataclass field that is a TOML key of its table: its default and checks, declared
    once, for :func:`read` (its type, from the annotation, says how it is read, unless it
    has a ``reader``; ``check`` then checks what was read). A ``required`` key has no
    default: the dataclass needs it too. A key may sit in a ``section`` (a sub-table) of
    the table and have a ``key`` name other than the field's."""
    rule = Rule(minimum, above, at_most, below, tuple(choices), length, required, section,
                key, reader, check)
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={_RULE: rule})


def _declared(cls: type) -> list[tuple[dataclasses.Field[Any], Rule]]:
    return [(f, f.metadata[_RULE]) for f in dataclasses.fields(cls)
            if _RULE in f.metadata]


def _keys(cls: type, section: str | None) -> tuple[str, ...]:
    """The keys of ``section`` (None: of the table itself; a section is a key there), in
    the order of their first field."""
    keys = [(r.section or r.key or f.name) if section is None else (r.key or f.name)
            for f, r in _declared(cls) if section is None or r.section == section]
    return tuple(dict.fromkeys(keys))


def rule_of(cls: type, name: str) -> Rule:
    """The checks field ``name`` of ``cls`` declares (e.g. to check a command-line value
    that overrides the key by the same rule)."""
    return next(r for f, r in _declared(cls) if f.name == name)


def declared_keys(cls: type) -> tuple[str, ...]:
    """The keys ``cls`` declares, in order (those :func:`read` allows)."""
    return _keys(cls, None)


def read(cls: type[T], t: Table, **given: Any) -> T:
    """A ``cls`` (a dataclass) from the table ``t``: its :func:`declared` keys are the keys
    allowed (in that order; those of a section in it); each key field not in
    ``given`` is read by its reader or type with its default and checks (a dataclass-typed
    one as a table); ``given`` holds the fields the caller reads itself."""
    t.allow(*declared_keys(cls))
    hints = typing.get_type_hints(cls)
    sections: dict[str | None, Table] = {None: t}
    values = {}
    for f, rule in _declared(cls):
        if rule.section is not None and rule.section not in sections:
            sections[rule.section] = section = t.table(rule.section)
            section.allow(*_keys(cls, rule.section))
        if f.name not in given:
            default = (f.default if f.default is not dataclasses.MISSING else None
                       if f.default_factory is dataclasses.MISSING else f.default_factory())
            values[f.name] = _value(sections[rule.section], rule.key or f.name,
                                    hints[f.name], default, rule)
    return cls(**values, **given)


def _value(t: Table, name: str, kind: Any, default: Any, rule: Rule) -> Any:
    value = (rule.reader(t, name, default) if rule.reader is not None
             else _typed(t, name, kind, default, rule))
    if rule.check is not None:
        rule.check(t, name, value)
    return value


def _typed(t: Table, name: str, kind: Any, default: Any, rule: Rule) -> Any:
    if isinstance(kind, types.UnionType):  # X | None
        kind = next(k for k in typing.get_args(kind) if k is not type(None))
    if dataclasses.is_dataclass(kind):
        return read(kind, t.table(name, rule.required))  # type: ignore[arg-type]
    if typing.get_origin(kind) is tuple:
        return _typed_list(t, name, typing.get_args(kind)[0], default, rule)
    return _typed_scalar(t, name, kind, default, rule)


def _typed_scalar(t: Table, name: str, kind: Any, default: Any, rule: Rule) -> Any:
    if kind is bool:
        return t.boolean(name, default)
    if kind is int:
        if rule.above is not None or rule.below is not None:
            raise TypeError(f"{name}: an integer key takes minimum and at_most, not above/below")
        return t.integer(name, default, rule.minimum, rule.required,  # type: ignore[arg-type]
                         rule.at_most)  # type: ignore[arg-type]
    if kind is float:
        return t.number(name, default, rule.minimum, rule.above, rule.at_most, rule.below,
                        rule.required)
    if kind is str:
        return (t.choice(name, default, rule.choices, rule.required) if rule.choices
                else t.string(name, default, rule.required))
    if kind is Path:
        value = t.string(name, None if default is None else str(default), rule.required)
        return None if value is None else Path(value)
    raise TypeError(f"{name}: no reader for {kind!r}")


def _typed_list(t: Table, name: str, item: Any, default: Any, rule: Rule) -> Any:
    """A ``tuple[item, ...]`` key: a TOML list of ``item``."""
    if item is int:
        return t.integers(name, default, minimum=rule.minimum)  # type: ignore[arg-type]
    if item is float:
        if rule.length is None:
            raise TypeError(f"{name}: a list of numbers needs its declared length")
        return t.numbers(name, default, rule.length, minimum=rule.minimum)
    if item is str:
        return t.strings(name, default, rule.required)
    if typing.get_origin(item) is tuple and typing.get_args(item)[0] is int:
        return t.integer_lists(name)
    raise TypeError(f"{name}: no reader for a list of {item!r}")

"""The cards a study generates with: the shipped cards, restricted to its variations.

One source of physics settings: a sample names a card (``top``, ``wqq``, ``qcd`` or a
file), and each shard of it is that card with only ``study.variations``, its share of the
events and its own run seed. The restricted card text is written beside the data so that
``resim generate --card DIR/cards/top-0.toml`` remakes a shard alone.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from resim.card import Card, CardError, parse_card, resolve_card_path
from resim.train.config import ConfigError

from .spec import Sample, Study

#: Run seeds of a test-only sample start this far from the card's (its own hard events).
TEST_SEED_OFFSET = 10_000


def restrict_variations(text: str, keep: Sequence[str]) -> str:
    """The card ``text`` without the ``[variations.X]`` tables whose X is not in ``keep``.

    Works on the text (a card's comments stay), so it only handles variations written as
    tables; :func:`study_card` checks the result against the parsed card.
    """
    out, skipping = [], False
    for line in text.splitlines(keepends=True):
        header = re.match(r"^\[\s*([A-Za-z0-9_.\"-]+)\s*\]", line)
        if header:
            parts = header.group(1).split(".")
            skipping = parts[0] == "variations" and len(parts) > 1 and parts[1] not in keep
        if not skipping:
            out.append(line)
    return "".join(out)


def shard_events(events: int, shards: int) -> list[int]:
    """Hard events per shard: as equal as possible, the first shards take the remainder."""
    return [events // shards + (k < events % shards) for k in range(shards)]


def study_card(study: Study, sample: Sample, shard: int, output: Path,
               test: bool = False) -> tuple[Card, str]:
    """The card of one shard of ``sample`` (only the study's variations; events, seed and
    output set), and its text; ``test``: a shard of its test-only sample (run seeds from
    the card's + :data:`TEST_SEED_OFFSET`)."""
    key = f"samples.{sample.name}.card"
    path, full, text, raw = _read_restricted(study, sample, key)
    _check_restricted(study, key, path, full, raw)
    what = "test-only shard" if test else "shard"
    text = (f"# {sample.name} {what} {shard} of resim study {study.source}: card "
            f"{sample.card}, variations {', '.join(study.variations)}\n") + text
    try:
        card = parse_card(raw, path, text)
        card = card.with_overrides(events=_shard_events(sample, shard, test),
                                   seed=_shard_seed(card, sample, shard, test), output=output)
    except CardError as err:
        raise ConfigError(study.source, key, str(err)) from None
    return card, text


def _read_restricted(study: Study, sample: Sample, key: str
                     ) -> tuple[Path, dict[str, Any], str, dict[str, Any]]:
    """The card file of ``sample`` (beside the study file, or shipped): its path and
    TOML, and the restricted text and its TOML."""
    where = Path(study.source).parent
    try:
        path = resolve_card_path(where / sample.card if (where / sample.card).is_file()
                                 else sample.card)
        original = path.read_text()
        full = tomllib.loads(original)
        text = restrict_variations(original, study.variations)
        raw = tomllib.loads(text)
    except (CardError, OSError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(study.source, key, str(err)) from None
    return path, full, text, raw


def _check_restricted(study: Study, key: str, path: Path, full: dict[str, Any],
                      raw: dict[str, Any]) -> None:
    """The card has every study variation, and its restricted text differs from it in
    nothing but the other variations."""
    have = list(full.get("variations", {}))
    missing = [v for v in study.variations if v not in have]
    if missing:
        raise ConfigError(study.source, "study.variations",
                          f"card {path} has no variation {', '.join(missing)} "
                          f"(it has {', '.join(have)})")
    same = {k: v for k, v in full.items() if k != "variations"} == \
        {k: v for k, v in raw.items() if k != "variations"}
    if not same or sorted(raw.get("variations", {})) != sorted(study.variations):
        raise ConfigError(study.source, key, f"cannot restrict the variations of {path} "
                          "by its text; write a card with only the study's variations")


def _shard_seed(card: Card, sample: Sample, shard: int, test: bool) -> int:
    base = card.run.seed if sample.seed is None else sample.seed
    return base + shard + (TEST_SEED_OFFSET if test else 0)


def _shard_events(sample: Sample, shard: int, test: bool) -> int:
    if test:
        return shard_events(sample.test_events, sample.test_shards)[shard]
    return shard_events(sample.events, sample.shards)[shard]


__all__ = ["TEST_SEED_OFFSET", "restrict_variations", "shard_events", "study_card"]

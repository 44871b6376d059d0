"""The cards a study generates with: the shipped cards, restricted to its variations.

One source of physics settings: a sample names a card (``top``, ``wqq``, ``qcd`` or a
file), and each shard of it is that card with only ``study.variations``, its share of the
events and its own run seed. The restricted card text is written beside the data so that
``resim generate --card DIR/cards/top-0.toml`` remakes a shard alone.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

from resim.card import Card, CardError, load_card, parse_card, restrict_variations
from resim.train.config import ConfigError

from .spec import Sample, Study

#: Run seeds of a test-only sample start this far from the card's (its own hard events).
TEST_SEED_OFFSET = 10_000


def shard_events(events: int, shards: int) -> list[int]:
    """Hard events per shard: as equal as possible, the first shards take the remainder."""
    return [events // shards + (k < events % shards) for k in range(shards)]


def study_card(study: Study, sample: Sample, shard: int, output: Path,
               test: bool = False) -> tuple[Card, str]:
    """The card of one shard of ``sample`` (only the study's variations; events, seed and
    output set), and its text; ``test``: a shard of its test-only sample (run seeds from
    the card's + :data:`TEST_SEED_OFFSET`)."""
    key = f"samples.{sample.name}.card"
    full = _read_card(study, sample, key)
    missing = [v for v in study.variations if v not in full.variation_names]
    if missing:
        raise ConfigError(study.source, "study.variations",
                          f"card {full.path} has no variation {', '.join(missing)} "
                          f"(it has {', '.join(full.variation_names)})")
    what = "test-only shard" if test else "shard"
    text = (f"# {sample.name} {what} {shard} of resim study {study.source}: card "
            f"{sample.card}, variations {', '.join(study.variations)}\n"
            ) + restrict_variations(full.text, study.variations)
    try:
        card = dataclasses.replace(full.with_variations(study.variations), text=text)
    except CardError as err:
        raise ConfigError(study.source, key, str(err)) from None
    if _remade(text, full.path) != card:  # the text beside the data remakes this card
        raise ConfigError(study.source, key, f"cannot restrict the variations of {full.path} "
                          "by its text; write a card with only the study's variations")
    try:
        card = card.with_overrides(events=_shard_events(sample, shard, test),
                                   seed=_shard_seed(card, sample, shard, test), output=output)
    except CardError as err:
        raise ConfigError(study.source, key, str(err)) from None
    return card, text


def _read_card(study: Study, sample: Sample, key: str) -> Card:
    """The card of ``sample``: a file beside the study file, or a shipped card."""
    where = Path(study.source).parent
    try:
        return load_card(where / sample.card if (where / sample.card).is_file()
                         else sample.card)
    except CardError as err:
        raise ConfigError(study.source, key, str(err)) from None


def _remade(text: str, path: Path) -> Card | None:
    try:
        return parse_card(tomllib.loads(text), path, text)
    except (CardError, tomllib.TOMLDecodeError):
        return None


def _shard_seed(card: Card, sample: Sample, shard: int, test: bool) -> int:
    base = card.run.seed if sample.seed is None else sample.seed
    return base + shard + (TEST_SEED_OFFSET if test else 0)


def _shard_events(sample: Sample, shard: int, test: bool) -> int:
    if test:
        return shard_events(sample.test_events, sample.test_shards)[shard]
    return shard_events(sample.events, sample.shards)[shard]


__all__ = ["TEST_SEED_OFFSET", "restrict_variations", "shard_events", "study_card"]

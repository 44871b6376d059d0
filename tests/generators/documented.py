"""Whether docs/cards.md names every key of a shipped preset (the detector's, pileup's)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path


def undocumented_keys(preset: str) -> list[str]:
    """Keys of a preset's TOML text, nested tables' too, that docs/cards.md never names
    (not the names of Pythia settings, nor the |PDG ids| of the energy shares)."""
    doc = (Path(__file__).parents[2] / "docs" / "cards.md").read_text()

    def names(table):
        for k, v in table.items():
            if not k.isdigit():
                yield k
            if isinstance(v, dict) and k != "settings":
                yield from names(v)

    return sorted({k for k in names(tomllib.loads(preset)) if not re.search(rf"\b{k}\b", doc)})

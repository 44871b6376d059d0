"""Derived seeds: any realization can be regenerated alone from its coordinates.

Pythia is re-seeded (``rndm.init``) before every hard event and every realization with
a seed that is a pure function of where it sits in the run, so output does not depend on
how events are split across ranks, batches or restarts.
"""

from __future__ import annotations

import hashlib

#: Pythia accepts seeds 1 ... 900 000 000.
PYTHIA_MAX_SEED = 900_000_000


def derive_seed(card_seed: int, *coordinates: int | str) -> int:
    """A Pythia seed for ``coordinates`` (e.g. ``"shower", "fsr_up", event, realization, attempt``).

    Hashing (rather than arithmetic on the indices) keeps streams of neighbouring events,
    variations and attempts unrelated.
    """
    text = "/".join(map(str, (card_seed, *coordinates))).encode()
    digest = hashlib.blake2b(text, digest_size=8).digest()
    return int.from_bytes(digest, "little") % PYTHIA_MAX_SEED + 1

"""Derived seeds: any realization can be regenerated alone from its coordinates.

Pythia is re-seeded (``rndm.init``) before every hard event and every realization with
a seed that is a pure function of where it sits in the run, so output does not depend on
how events are split across ranks, batches or restarts.

The detector draws its random numbers without a generator state: each is a pure function
of a 64-bit key of its realization (:func:`derive_key`), a stream (what it is for) and a
counter (which particle or calorimeter cell), hashed with SplitMix64's finaliser
(counter-based random numbers, as Random123's Philox; Steele, Lea & Flood, OOPSLA 2014,
for SplitMix64). So a realization's detector response is the same whichever other
realizations share its block, rank or numpy call, and all of a block's draws are one
vectorised call.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

#: Pythia accepts seeds 1 ... 900 000 000.
PYTHIA_MAX_SEED = 900_000_000

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_STREAM = 0xD1B54A32D192ED03


def _digest(card_seed: int, coordinates: tuple[int | str, ...]) -> int:
    text = "/".join(map(str, (card_seed, *coordinates))).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")


def derive_seed(card_seed: int, *coordinates: int | str) -> int:
    """A Pythia seed for ``coordinates`` (e.g. ``"shower", "fsr_up", event, realization, attempt``).

    Hashing (rather than arithmetic on the indices) keeps streams of neighbouring events,
    variations and attempts unrelated.
    """
    return _digest(card_seed, coordinates) % PYTHIA_MAX_SEED + 1


def derive_key(card_seed: int, *coordinates: int | str) -> int:
    """A 64-bit key for counter-based random numbers (:func:`uniform`, :func:`normal`)."""
    return _digest(card_seed, coordinates)


def derive_keys(card_seed: int, coordinates: Iterable[tuple[int | str, ...]]) -> np.ndarray:
    """:func:`derive_key` of each of ``coordinates`` (uint64): a block's keys in one call."""
    prefix, blake2b = f"{card_seed}/", hashlib.blake2b
    return np.fromiter((int.from_bytes(blake2b((prefix + "/".join(map(str, c))).encode(),
                                               digest_size=8).digest(), "little")
                        for c in coordinates), np.uint64)


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijective scramble of uint64 values."""
    return _scramble(np.array(x, dtype=np.uint64))


def _scramble(x: np.ndarray) -> np.ndarray:
    """:func:`mix64` in place (no temporaries beyond the shifts) of uint64 ``x``."""
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def _bases(keys: np.ndarray, stream: int, event: np.ndarray | None) -> np.ndarray:
    """Each draw's scrambled (key, stream): from ``keys[event]`` if ``event`` is given
    (scrambling each key once, not once per draw), else from ``keys``."""
    salt = np.uint64((stream + 1) * _STREAM % 2**64)  # Python ints: no uint64 overflow
    base = mix64(np.asarray(keys, np.uint64) ^ salt)
    return base if event is None else base.take(event)


def _uniform(base: np.ndarray, counters: np.ndarray) -> np.ndarray:
    x = np.asarray(counters).astype(np.uint64)
    x += np.uint64(1)
    x *= _GOLDEN
    x += base
    _scramble(x)
    x >>= np.uint64(11)
    u = x.astype(np.float64)
    u += 0.5
    u *= 2.0**-53
    return u


def uniform(keys: np.ndarray, stream: int, counters: np.ndarray,
            event: np.ndarray | None = None) -> np.ndarray:
    """Uniform numbers in (0, 1), one per (key, counter), for random-number ``stream``.
    With ``event``, draw i uses key ``keys[event[i]]`` (the same numbers, made faster)."""
    return _uniform(_bases(keys, stream, event), counters)


def _box_muller(keys: np.ndarray, stream: int, counters: np.ndarray,
                event: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(radius, angle) of Box–Muller from the uniforms at counters 2c and 2c + 1; the
    angle in single precision, where numpy's sine and cosine are vectorised (in double
    precision they cost 20 times more, and 1e-7 is plenty for a smearing)."""
    base = _bases(keys, stream, event)
    counters = np.asarray(counters).astype(np.uint64) * np.uint64(2)
    u1 = _uniform(base, counters)
    counters += np.uint64(1)
    u2 = _uniform(base, counters)
    return np.sqrt(-2.0 * np.log(u1)), (2.0 * np.pi * u2).astype(np.float32)


def normal(keys: np.ndarray, stream: int, counters: np.ndarray,
           event: np.ndarray | None = None) -> np.ndarray:
    """Standard normal numbers, one per (key, counter) (Box–Muller on two uniforms); keys
    as :func:`uniform`'s."""
    radius, angle = _box_muller(keys, stream, counters, event)
    return radius * np.cos(angle)


def normal_pair(keys: np.ndarray, stream: int, counters: np.ndarray,
                event: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Two independent standard normal numbers per (key, counter); the first is
    :func:`normal`'s."""
    radius, angle = _box_muller(keys, stream, counters, event)
    return radius * np.cos(angle), radius * np.sin(angle)

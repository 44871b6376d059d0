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


def _draws(base: np.ndarray, counters: np.ndarray) -> np.ndarray:
    """64 random bits per counter (uint64)."""
    x = np.asarray(counters).astype(np.uint64)
    x += np.uint64(1)
    x *= _GOLDEN
    x += base
    return _scramble(x)


def _unit(k: np.ndarray, bits: int, dtype: type) -> np.ndarray:
    """(k + 1/2) / 2**bits for integers 0 <= k < 2**bits (uint64): in (0, 1), never 0
    or 1 when ``dtype`` holds ``bits + 1`` significant bits."""
    # through int64 (exact below 2**63): numpy converts int64, not uint64, with SIMD
    u: np.ndarray = k.view(np.int64).astype(dtype)
    u += dtype(0.5)
    u *= dtype(2.0**-bits)
    return u


def _uniform(base: np.ndarray, counters: np.ndarray, bits: int = 53,
             dtype: type = np.float64) -> np.ndarray:
    """Uniform numbers in (0, 1) from the top ``bits`` bits of each counter's draw."""
    x = _draws(base, counters)
    x >>= np.uint64(64 - bits)
    return _unit(x, bits, dtype)


def uniform(keys: np.ndarray, stream: int, counters: np.ndarray,
            event: np.ndarray | None = None, single: bool = False) -> np.ndarray:
    """Uniform numbers in (0, 1), one per (key, counter), for random-number ``stream``.
    With ``event``, draw i uses key ``keys[event[i]]`` (the same numbers, made faster).
    ``single``: float32 numbers from the top 23 bits of the same draws (steps of 1.2e-7,
    plenty for a cut on an efficiency or a point in a cell)."""
    base = _bases(keys, stream, event)
    return _uniform(base, counters, 23, np.float32) if single else _uniform(base, counters)


def _box_muller(keys: np.ndarray, stream: int, counters: np.ndarray,
                event: np.ndarray | None, single: bool) -> tuple[np.ndarray, np.ndarray]:
    """(radius, angle) of Box–Muller from one draw per counter: the radius's uniform
    from its top 41 bits (so |z| reaches 7.6, beyond which a normal lies with probability
    2e-13), the angle's from the low 23 bits. The angle in single precision, where
    numpy's sine and cosine are vectorised (in double precision they cost 20 times more,
    and 1e-7 is plenty for a smearing). ``single``: the radius too, from the logarithm of
    a double-precision uniform (float32 would round uniforms near 1 to 1)."""
    x = _draws(_bases(keys, stream, event), counters)
    angle = _unit(x & np.uint64((1 << 23) - 1), 23, np.float32)
    angle *= np.float32(2.0 * np.pi)
    x >>= np.uint64(23)
    r2 = np.log(_unit(x, 41, np.float64))
    r2 *= -2.0
    if single:
        r2 = r2.astype(np.float32)
    return np.sqrt(r2, out=r2), angle


def normal(keys: np.ndarray, stream: int, counters: np.ndarray,
           event: np.ndarray | None = None, single: bool = False) -> np.ndarray:
    """Standard normal numbers, one per (key, counter) (Box–Muller); keys
    as :func:`uniform`'s; ``single``: float32."""
    radius, angle = _box_muller(keys, stream, counters, event, single)
    return radius * np.cos(angle)


def normal_pair(keys: np.ndarray, stream: int, counters: np.ndarray,
                event: np.ndarray | None = None, single: bool = False
                ) -> tuple[np.ndarray, np.ndarray]:
    """Two independent standard normal numbers per (key, counter); the first is
    :func:`normal`'s."""
    radius, angle = _box_muller(keys, stream, counters, event, single)
    return radius * np.cos(angle), radius * np.sin(angle)

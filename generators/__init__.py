"""Event generation: freeze a hard process, re-run everything downstream of it.

Pipeline, one module each:

- :mod:`.seeds` — every random number comes from a seed derived from
  (card seed, hard event, variation, realization, attempt);
- :mod:`.pythia_setup` — building and checking Pythia instances from a card;
- :mod:`.hard_process` — the upstream Pythia: makes or reads hard processes
  (with resonance decays) and freezes each one as a :class:`~.hard_process.HardEvent`;
- :mod:`.handoff` — hands a frozen hard process (or parton-level event) to a
  downstream Pythia in memory;
- :mod:`.resimulate` — the downstream Pythias, one per variation, that turn frozen
  hard events into realizations, retrying failures with new seeds.
"""

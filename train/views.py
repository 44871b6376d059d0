"""Which realizations of a group become the views of one pre-training example.

A *group* is one frozen hard-process object; its *realizations* are its jets (one per
variation and realization index). :class:`ViewPolicy` says how ``views`` jets are drawn
from a group:

* ``mode="any"``: any ``views`` distinct realizations, uniformly;
* ``mode="nominal_plus"``: the nominal realization (the first jet of variation
  ``nominal``) plus ``views - 1`` distinct others;
* ``variations=(...)``: only realizations of these variations are eligible (for
  ``nominal_plus``: as the *others*; the nominal anchor is always allowed). The RS3L
  ablations are then a config change: seed-only ``ViewPolicy(mode="nominal_plus",
  variations=("seed",))``, FSR-only ``variations=("fsr_up", "fsr_down")``, shower-model-only
  ``variations=("vincia",)``;
* ``source="augment"``: no re-simulation at all: one realization (the nominal one) is
  replicated ``views`` times and every copy goes through a JetCLR-style augmentation
  (the caller supplies it); ``mode`` and ``variations`` are then unused.

Groups with too few eligible realizations cannot give ``views`` distinct ones and are
skipped by the loader (which counts them). Everything here is pure numpy on index arrays:
the loader calls :func:`choose_views` on a whole batch of groups at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..ranges import ranges

MODES = ("any", "nominal_plus")
SOURCES = ("resim", "augment")


@dataclass(frozen=True)
class ViewPolicy:
    """How the ``views`` jets of one group are chosen (see the module docstring)."""

    views: int = 2
    mode: str = "any"
    variations: Sequence[str] | None = None  # kept as a tuple
    source: str = "resim"
    nominal: str = "nominal"

    def __post_init__(self) -> None:
        if isinstance(self.views, bool) or not isinstance(self.views, int | np.integer) \
                or self.views < 1:
            # 1 view: one jet per group, for objectives without positive pairs (MPM, JEPA);
            # the training config refuses it for the contrastive ones.
            raise ValueError(f"views must be an integer >= 1, got {self.views!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {self.source!r}")
        if self.variations is not None:
            if isinstance(self.variations, str):
                object.__setattr__(self, "variations", (self.variations,))
            object.__setattr__(self, "variations", tuple(self.variations))
            if not self.variations or not all(isinstance(v, str) for v in self.variations):
                raise ValueError(f"variations must be a non-empty list of variation names, "
                                 f"got {self.variations!r}")

    def __str__(self) -> str:
        """As a config says it (the error of a split without usable groups shows it)."""
        which = ", ".join(self.variations) if self.variations else "any variation"
        return (f"{self.views} views of {which}, mode {self.mode!r}, source "
                f"{self.source!r}")

    def check_names(self, names: Sequence[str]) -> None:
        """Raise ValueError if the policy names a variation the data set does not have."""
        wanted = set(self.variations or ())
        if self.source == "augment" or self.mode == "nominal_plus":
            wanted.add(self.nominal)
        missing = sorted(wanted - set(names))
        if missing:
            raise ValueError(f"variations: {', '.join(map(repr, missing))} not in the data "
                             f"(it has {', '.join(names)})")

    def masks(self, names: Sequence[str], variation: np.ndarray,
              first_of_variation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-jet masks (eligible, anchor) for jets with variation codes ``variation``.

        ``first_of_variation`` is True for the first jet of its variation within its group.
        The anchor is the nominal realization (``nominal_plus`` and ``augment``); eligible
        jets are the ones views may be drawn from, the anchor included.
        """
        self.check_names(names)
        code = {name: i for i, name in enumerate(names)}
        anchor = np.zeros(len(variation), bool)
        if self.source == "augment" or self.mode == "nominal_plus":
            anchor = (variation == code[self.nominal]) & first_of_variation
        if self.source == "augment":
            return anchor, anchor
        if self.variations is None:
            eligible = np.ones(len(variation), bool)
        else:
            eligible = np.isin(variation, [code[v] for v in self.variations])
        return eligible | anchor, anchor

    def usable(self, eligible_per_group: np.ndarray, anchor_per_group: np.ndarray) -> np.ndarray:
        """Which groups, with these counts of eligible and anchor jets, can give the views."""
        if self.source == "augment":
            return anchor_per_group > 0
        if self.mode == "nominal_plus":
            return (anchor_per_group > 0) & (eligible_per_group >= self.views)
        return eligible_per_group >= self.views


def choose_views(policy: ViewPolicy, starts: np.ndarray, sizes: np.ndarray,
                 eligible: np.ndarray, anchor: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray:
    """The jet rows of the views of groups whose jets are rows ``starts[i] + (0..sizes[i]-1)``.

    Returns an (n_groups, views) integer array; ``eligible`` and ``anchor`` are per-jet masks
    from :meth:`ViewPolicy.masks`. Every group must be usable (the caller filters). In
    ``nominal_plus`` mode the anchor is view 0; otherwise the views come in random order.
    """
    rows, slot = ranges(starts, sizes)
    keep = eligible[rows]
    rows, slot = rows[keep], slot[keep]
    if policy.source == "augment":
        first = anchor[rows]
        base = rows[first][np.unique(slot[first], return_index=True)[1]]
        if len(base) != len(starts):
            raise ValueError("choose_views: a group without its nominal realization")
        return np.repeat(base[:, None], policy.views, axis=1)
    key = rng.random(len(rows))
    if policy.mode == "nominal_plus":
        key[anchor[rows]] = -1.0
    order = np.lexsort((key, slot))
    rows, slot = rows[order], slot[order]
    first_of_slot = np.searchsorted(slot, slot, side="left")
    rank = np.arange(len(slot)) - first_of_slot
    chosen = rows[rank < policy.views]
    if len(chosen) != len(starts) * policy.views:
        raise ValueError(f"choose_views: a group has fewer than {policy.views} eligible jets")
    return chosen.reshape(len(starts), policy.views)

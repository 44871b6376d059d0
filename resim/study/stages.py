"""A study's unit of work, the :class:`Stage`, and its record on disk (``stage.json``).

A stage is a directory under the study's output (``pretrain/rs3l-s0``), of one of
:data:`KINDS`, with a *fingerprint*: a hash of everything that determines its output
(card text, events and seed; the effective training config; the fingerprints of the
stages it reads). Its record says whether it is complete, with which fingerprint, its run
time and its result.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STAGE_FILE = "stage.json"
KINDS = ("generate", "pretrain", "probe", "finetune", "evaluate")


@dataclass
class Stage:
    """One unit of work: a kind, its directory, what it needs, and its parameters."""

    name: str  # e.g. "pretrain/rs3l-s0": also its directory under the output
    kind: str
    fingerprint: str
    params: dict[str, Any]
    needs: tuple[str, ...] = ()
    record: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def complete(self) -> bool:
        return bool(self.record and self.record.get("complete")
                    and self.record.get("fingerprint") == self.fingerprint)


def stage_fingerprint(*parts: Any) -> str:
    """A short hash of ``parts`` (JSON, keys sorted)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def pct(fraction: float) -> str:
    """A fraction as a directory-name part: 0.01 -> '1pct', 0.125 -> '12.5pct'."""
    return f"{100 * fraction:g}pct"


def read_record(directory: Path) -> dict[str, Any] | None:
    try:
        return json.loads((directory / STAGE_FILE).read_text())
    except (OSError, ValueError):
        return None


def write_record(directory: Path, record: dict[str, Any]) -> None:
    """``stage.json``, atomically (a killed study never leaves half a record)."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{STAGE_FILE}.tmp{os.getpid()}"
    tmp.write_text(json.dumps(record, indent=1, default=str) + "\n")
    os.replace(tmp, directory / STAGE_FILE)


__all__ = ["KINDS", "STAGE_FILE", "Stage", "pct", "read_record", "stage_fingerprint",
           "write_record"]

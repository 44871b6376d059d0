"""Running ``resim generate`` as a user does, in a subprocess, alone or under mpiexec:
the commands, waiting for a condition, finding a rank's process, comparing outputs."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import resim
from resim.layout import TABLES
from resim.store import parts_dir

CARDS = Path(__file__).parents[1] / "cards"
RESUME = CARDS / "resume.toml"
BIN = Path(sys.executable).parent
MPIEXEC = BIN / "mpiexec"
needs_mpi = pytest.mark.skipif(not MPIEXEC.exists(),
                               reason="no mpiexec in this environment (pip install mpich)")


def command(*args: str, ranks: int | None = None) -> list[str]:
    resim_cmd = [str(BIN / "resim"), "generate", *args, "--quiet"]
    return resim_cmd if ranks is None else [str(MPIEXEC), "-n", str(ranks), *resim_cmd]


def run(*args: str, ranks: int | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args, ranks=ranks), capture_output=True, text=True,
                          timeout=timeout)


def assert_same_data(a: Path, b: Path) -> None:
    da, db = resim.open(a), resim.open(b)
    for table, columns in TABLES.items():
        for name in columns:
            assert np.array_equal(da.column(table, name), db.column(table, name)), (table, name)


def committed_events(output: Path) -> int:
    parts = parts_dir(output)
    if not parts.is_dir():
        return 0
    total = 0
    for journal in parts.glob("events-*.json"):
        try:
            data = json.loads(journal.read_text())
        except (json.JSONDecodeError, OSError):  # being replaced right now
            continue
        total += data["done"] - data["first"]
    return total


def wait_for(predicate, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise TimeoutError("condition not reached")
        time.sleep(0.02)


def descendants(pid: int) -> list[int]:
    """Process ids of every descendant of ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def rank_pid(mpiexec_pid: int, rank: int) -> int:
    for pid in descendants(mpiexec_pid):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"PMI_RANK={rank}".encode() in env and b"PMI_SIZE" in b" ".join(env):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"resim" in cmdline and b"generate" in cmdline:
                return pid
    raise LookupError(f"rank {rank} not found")

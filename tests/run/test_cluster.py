"""Mistakes that only show on clusters: ranks started so that each would write the whole
output, and data sets over more segment files than a process may open at once."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from resim import store
from resim.layout import TABLES

BIN = Path(sys.executable).parent
SMOKE = ["generate", "--card", "smoke", "--quiet"]


def resim(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("PMI_", "OMPI_", "PMIX_", "SLURM_", "MPI_"))}
    return subprocess.run([str(BIN / "resim"), *args], capture_output=True, text=True,
                          env={**clean, **env}, cwd=cwd, timeout=120)


def test_srun_without_mpi_is_refused_before_anything_is_written(tmp_path):
    # `srun -n 4 resim generate` where Slurm's default is --mpi=none: four processes,
    # no PMI, each would be "rank 0 of 1" and make the whole run into the same file.
    result = resim(*SMOKE, env={"SLURM_STEP_NUM_TASKS": "4", "SLURM_PROCID": "1"},
                   cwd=tmp_path)
    assert result.returncode == 2
    assert "srun started 4 tasks without MPI" in result.stderr
    assert "srun --mpi=pmi2" in result.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.skipif(not (BIN / "mpiexec").exists(), reason="no MPI installed (pip install mpich)")
def test_a_launcher_of_another_mpi_is_refused(tmp_path):
    # Open MPI's mpirun starting processes whose mpi4py loads MPICH: each initialises
    # alone, a world of one, though the launcher says three.
    result = resim(*SMOKE, env={"OMPI_COMM_WORLD_SIZE": "3", "OMPI_COMM_WORLD_RANK": "0"},
                   cwd=tmp_path)
    assert result.returncode == 2
    assert "launcher started 3 ranks (OMPI_COMM_WORLD_SIZE) but MPI sees 1" in result.stderr
    assert not any(tmp_path.iterdir())


def many_segments(directory: Path, n: int) -> Path:
    """A data set over ``n`` one-event segments; jet pt = event index (3 jets each)."""
    output = directory / "many.h5"
    parts = store.parts_dir(output)
    parts.mkdir()
    segs = []
    rows = {t: 1 if t == "events" else 3 for t in TABLES}
    for i in range(n):
        seg = store.Segment(path=parts / f"events-{i:010d}.h5", first=i, done=i + 1, rows=rows)
        with h5py.File(seg.path, "w") as f:
            for table, columns in TABLES.items():
                for name, dtype in columns.items():
                    value = i if (table, name) == ("jets", "pt") else i % 100
                    f.create_dataset(f"{table}/{name}", data=np.full(rows[table], value, dtype))
        segs.append(seg)
    store.build_dataset(output, segs, n, {"variations": ["nominal"], "labels": ["top"]})
    return output


READ = """
import resource, sys
import numpy as np
import resim
try:
    ds = resim.open(sys.argv[1])
except OSError as err:
    sys.exit(f"error: {err}")
pt = ds.column("jets", "pt")
assert len(pt) == 3 * int(sys.argv[2]), len(pt)
wrong = int((pt != np.repeat(np.arange(int(sys.argv[2])), 3)).sum())
print(wrong, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


def read_with_limit(path: Path, n: int, soft: int, hard: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", READ, str(path), str(n)], capture_output=True,
                          text=True, cwd=path.parent, timeout=120,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE,
                                                                (soft, hard)))


def test_more_segments_than_open_files_are_read_whole_or_refused(tmp_path):
    # HDF5 reads a virtual data set by opening every segment the read spans at once and
    # fills rows of a file it cannot open with zeros, silently: a full column of a
    # 1000-rank run under the usual limit of 1024 open files came back part zeros.
    n = 150
    path = many_segments(tmp_path, n)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < n + 300:
        pytest.skip(f"hard limit of open files ({hard}) too low for this test")

    result = read_with_limit(path, n, soft=40, hard=hard)
    assert result.returncode == 0, result.stderr
    wrong, soft = map(int, result.stdout.split())
    assert wrong == 0 and soft >= n  # the reader raised its own soft limit

    result = read_with_limit(path, n, soft=40, hard=40)
    assert result.returncode != 0
    assert f"opens its {n} segment files at once" in result.stderr
    assert "at most 40 files" in result.stderr

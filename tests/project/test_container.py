"""The Dockerfile builds, and the image runs the generator under MPI: ``mpiexec -n 2 resim
generate --card smoke`` inside it makes a complete data set with the same bytes as a
one-process run of the same card here.

The image is built and run by the project's ``container-check.sh`` (podman + buildah on a
Debian base image it makes with debootstrap; it apt-installs those tools when they are
missing, so it needs root, as CI has). The first build on a machine takes minutes: the
tools, the base image and resim's dependencies; later builds reuse the cached layers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import resim

REPO = Path(__file__).resolve().parents[2]
SCRIPT = Path(os.environ.get("RESIM_CONTAINER_CHECK",
                             REPO.parent / "shared" / "tools" / "container-check.sh"))
TOOLS = ("podman", "buildah", "runc", "debootstrap")

#: Run inside the image and here: how many ranks made the data set, how many segment
#: files it spans, and a SHA-256 of every table's columns in reading order.
DIGEST = """
import hashlib, json, sys
from pathlib import Path
import resim
from resim.layout import TABLES
ds = resim.open(sys.argv[1])
print(json.dumps({
    "n_ranks": int(ds.attrs["n_ranks"]),
    "segments": len(list(Path(sys.argv[1] + ".parts").glob("events-*.h5"))),
    "versions": {k: str(ds.attrs[k]) for k in ("pythia_version", "fastjet_version",
                                               "awkward_version", "hdf5_version")},
    "digests": {t: hashlib.sha256(b"".join(ds.column(t, c).tobytes() for c in cols)).hexdigest()
                for t, cols in TABLES.items()},
}))
"""


def _why_it_cannot_run() -> str | None:
    if not SCRIPT.is_file():
        return f"no container-check script at {SCRIPT} (set RESIM_CONTAINER_CHECK)"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing and os.geteuid() != 0:
        return f"{', '.join(missing)} missing and not root, so they cannot be apt-installed"
    return None


def _sections(stdout: str) -> dict[str, str]:
    """Split the container's output at the ``=== name`` lines the command prints."""
    out: dict[str, list[str]] = {}
    name = "generate"
    for line in stdout.splitlines():
        if line.startswith("=== "):
            name = line[4:].strip()
        else:
            out.setdefault(name, []).append(line)
    return {k: "\n".join(v) for k, v in out.items()}


@pytest.mark.slow
def test_the_image_runs_the_generator_under_mpi(generate_card):
    reason = _why_it_cannot_run()
    if reason:
        if os.environ.get("CI"):  # CI has root and Debian's registry: never skip there
            pytest.fail(reason)
        pytest.skip(reason)

    inside = ("mpiexec -n 2 resim generate --card smoke --output /tmp/smoke.h5 --quiet"
              " && echo '=== inspect' && resim inspect --json /tmp/smoke.h5"
              f" && echo '=== digest' && python -c '{DIGEST}' /tmp/smoke.h5")
    assert "'" not in DIGEST
    result = subprocess.run(["bash", str(SCRIPT), "--context", str(REPO), "--", "sh", "-c",
                             inside], capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-4000:]
    parts = _sections(result.stdout)
    assert parts["generate"].count("resim: ") == 1, parts["generate"]  # one summary: rank 0

    inspected = json.loads(parts["inspect"])
    inside_digest = json.loads(parts["digest"])
    assert inside_digest["n_ranks"] == 2 and inside_digest["segments"] == 2
    assert inspected["n_events"] == 20 and inspected["n_hard_failed"] == 0
    assert list(inspected["variations"]) == ["nominal", "seed", "fsr_up", "fsr_down",
                                             "hadronization"]
    assert inspected["card"].endswith("resim/cards/smoke.toml")

    # The same card made here by one process: same counts, and the same bytes.
    here = generate_card("smoke")
    native = json.loads(subprocess.run([sys.executable, "-c", DIGEST, str(here)], check=True,
                                       capture_output=True, text=True,
                                       cwd=here.parent).stdout)  # not the checkout's resim/
    ds = resim.open(here)
    assert inspected["n_groups"] == len(ds.column("groups", "group")) > 30
    assert inspected["n_jets"] == len(ds)
    assert inside_digest["digests"] == native["digests"], (
        "the image made other data than this installation: "
        f"versions inside {inside_digest['versions']}, here {native['versions']}")

"""Packaging: ``pip install .`` and ``pip install -e .`` both give one import package
``resim`` with ``resim.generators``, ``resim.train`` and the shipped cards, importable
from outside the checkout, and nothing named ``generators`` or ``train`` at the top level.

Each install goes into a fresh virtual environment, without dependencies (``--no-deps``,
and no build isolation where setuptools is recent enough: nothing is downloaded). The
environment reaches the dependencies that are already installed through a directory of
links to them — every entry of this interpreter's site-packages except resim itself, so
the resim under test is the one just installed.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import site
import subprocess
import sysconfig
import venv
from pathlib import Path

import pytest
import pythia8mc

ROOT = Path(__file__).parents[2]
#: Where pythia8mc's own lookup finds its data files: ../../../share/Pythia8/xmldoc from
#: the library.
PYTHIA_DATA = Path(pythia8mc.__file__).resolve().parents[3] / "share" / "Pythia8" / "xmldoc"
#: Build with the setuptools at hand when it is recent enough (nothing is downloaded);
#: otherwise pip fetches pyproject's build requirements.
OFFLINE_BUILD = (["--no-build-isolation", "--no-index"]
                 if int(importlib.metadata.version("setuptools").split(".")[0]) >= 69 else [])
#: What the build needs from the checkout (pyproject's package-dir, readme).
SOURCES = ("pyproject.toml", "README.md", "resim", "generators", "train", "cards")

PROBE = """
import importlib.util, json, resim, resim.generators, resim.train
from resim.card import shipped_cards
from resim.generators.handoff import Feeder
print(json.dumps({
    "resim": resim.__file__, "generators": resim.generators.__file__,
    "train": resim.train.__file__, "version": resim.__version__, "cards": shipped_cards(),
    "top_level": [m for m in ("generators", "train", "cards")
                  if importlib.util.find_spec(m) is not None],
}))
"""


def dependencies(target: Path) -> Path:
    """A directory of links to every installed distribution but resim."""
    target.mkdir()
    for base in {*site.getsitepackages(), sysconfig.get_paths()["purelib"]}:
        for entry in Path(base).iterdir():
            name = entry.name.lower()
            if (name == "resim" or name.startswith(("resim-", "__editable__"))
                    or name.endswith(".pth") or (target / entry.name).exists()):
                continue
            (target / entry.name).symlink_to(entry)
    return target


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A copy of the checkout's sources (building must not write into the checkout)."""
    copy = tmp_path_factory.mktemp("src") / "resim"
    copy.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, copy / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(ROOT / name, copy / name)
    return copy


@pytest.fixture(scope="module")
def deps(tmp_path_factory) -> Path:
    return dependencies(tmp_path_factory.mktemp("deps") / "site")


@pytest.mark.slow
@pytest.mark.parametrize("editable", [False, True], ids=["pip install .", "pip install -e ."])
def test_installed_package_imports_from_outside_the_checkout(tmp_path, source, deps, editable):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()"
                              "['purelib'])"], capture_output=True, text=True,
                             check=True).stdout.strip()
    (Path(purelib) / "deps.pth").write_text(f"{deps}\n")  # after the venv's own packages
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    # pythia8mc finds its data files (settings, particle table) relative to its library's
    # path, which here is a link: point it at them.
    env["PYTHIA8DATA"] = str(PYTHIA_DATA)
    install = [python, "-m", "pip", "install", "--quiet", "--no-deps", *OFFLINE_BUILD,
               *(["-e"] if editable else []), str(source)]
    done = subprocess.run(install, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = subprocess.run([python, "-c", PROBE], cwd=elsewhere, env=env, capture_output=True,
                           text=True)
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    where = Path(found["generators"]).resolve()
    if editable:  # the mapped folder of the source tree, not a copy
        assert where == (source / "generators" / "__init__.py").resolve()
        assert Path(found["train"]).resolve() == (source / "train" / "__init__.py").resolve()
    else:  # inside the environment, under resim/
        assert where.is_relative_to(Path(purelib).resolve())
        assert where.parent.name == "generators" and where.parent.parent.name == "resim"
    assert found["version"] == "0.1.0"
    assert {"smoke", "top", "qcd", "wqq", "zqq", "hbb", "hcc", "hgg"} <= set(found["cards"])
    assert found["top_level"] == []  # no stray `generators`, `train` or `cards` package

    # The console script works too: the shipped smoke card checks with Pythia.
    check = subprocess.run([env_dir / "bin" / "resim", "check", "smoke"], cwd=elsewhere,
                           env=env, capture_output=True, text=True)
    assert check.returncode == 0 and "ok" in check.stdout, check.stderr

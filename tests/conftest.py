"""Shared fixtures: small data sets made by the real generator, once per test session.

Nothing is downloaded: the trainer's tests use jets generated here from the cards in
``tests/cards`` (boosted tops, and light-quark/gluon jets; four variations each).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CARDS = Path(__file__).parent / "cards"


def make_dataset(directory: Path, card: str | Path, **overrides) -> Path:
    """Generate ``card`` (a test card name, a shipped card name, or a path) into ``directory``."""
    from resim.card import load_card
    from resim.generate import generate

    path = CARDS / f"{card}.toml" if (CARDS / f"{card}.toml").exists() else card
    loaded = load_card(path)
    output = directory / (overrides.pop("output", None) or loaded.run.output.name)
    generate(loaded.with_overrides(output=output, **overrides), progress=False)
    return output


@pytest.fixture(scope="session")
def top_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~100 boosted top events: ~200 top jets in groups of up to 4 (nominal, seed, fsr_up/down)."""
    return make_dataset(tmp_path_factory.mktemp("top"), "top_small")


@pytest.fixture(scope="session")
def qcd_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~60 QCD dijet events: ~400 q/g jets in groups of up to 4."""
    return make_dataset(tmp_path_factory.mktemp("qcd"), "qcd_small")


@pytest.fixture(scope="session")
def detector_datasets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Tops and QCD jets at both levels (CMS detector preset; a detector-stage variation)."""
    directory = tmp_path_factory.mktemp("detector")
    return (make_dataset(directory, "detector", events=10),
            make_dataset(directory, "detector_qcd"))


@pytest.fixture(scope="session")
def pileup_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tops at detector level with <mu> = 50 pileup and pileup-stage variations."""
    return make_dataset(tmp_path_factory.mktemp("pileup"), "pileup")


@pytest.fixture
def generate_card(tmp_path: Path):
    """Generate a card into this test's tmp_path: ``generate_card("top_small", events=5)``."""

    def run(card: str | Path, **overrides) -> Path:
        return make_dataset(tmp_path, card, **overrides)

    return run


def _damage_chunk(path: Path, column: str, index: int) -> None:
    import h5py

    with h5py.File(path, "r") as f:
        chunk = f[column].id.get_chunk_info(index)
    with open(path, "r+b") as f:
        f.seek(chunk.byte_offset + chunk.size // 2)
        f.write(os.urandom(64))


@pytest.fixture
def damage_chunk():
    """``damage_chunk(path, column, index)`` overwrites part of one stored chunk of
    ``column`` in an HDF5 file, as a kill in the middle of a write could."""
    return _damage_chunk


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tests/cards/resume.toml`` run once, uninterrupted, in this process: what an
    interrupted and resumed run of that card must give bit for bit."""
    return make_dataset(tmp_path_factory.mktemp("reference"), "resume", output="ref.h5")

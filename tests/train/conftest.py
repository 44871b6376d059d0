"""Fixtures for the trainer's tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def one_thread():
    """One torch thread for tiny models: faster than two on a shared 2-core machine, and
    immune to other processes; the previous setting is restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


#: A tiny RS3L pre-training config on the small ParT (16 wide, one block, 32 particles).
TINY_PART = """
[encoder]
name = "part"
embed_dims = [16, 16]
pair_embed_dims = [8, 8]
num_heads = 2
num_layers = 1
num_cls_layers = 1

[method]
name = "rs3l"

[data]
max_particles = 32
batch_size = 64
"""


@pytest.fixture(scope="session")
def tiny_part() -> str:
    """:data:`TINY_PART`: the text of a tiny ParT + RS3L config (add [run] etc. to it)."""
    return TINY_PART

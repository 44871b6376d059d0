"""Every ``resim`` command in docs/training.md names a real command and real options.

(The commands were also run as written, in order, on generated data; that takes a quarter
of an hour on two cores, so it is not part of the suite.)
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from resim.cli import main

DOC = Path(__file__).parents[2] / "docs" / "training.md"


def commands() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", DOC.read_text(), flags=re.S)
    lines = [line.split(" #")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line]


def test_the_doc_has_the_walkthrough() -> None:
    found = commands()
    for verb in ("generate", "train", "finetune", "evaluate", "configs"):
        assert any(c.startswith(f"resim {verb}") for c in found), verb
    assert any(c.startswith("torchrun ") for c in found)


@pytest.mark.parametrize("line", [c for c in commands() if "resim " in c])
def test_command_parses(line: str) -> None:
    words = shlex.split(line)
    words = words[words.index("resim") + 1:]
    name, args = words[0], words[1:]
    command = main.get_command(click.Context(main), name)
    assert command is not None, f"no command {name!r}"
    with command.make_context(name, args, resilient_parsing=False):
        pass

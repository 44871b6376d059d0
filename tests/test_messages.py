"""Library messages go through ``logging``; the command line shows them on stderr as resim
always wrote them (``warning: ...``), once however often it is set up."""

from __future__ import annotations

import logging

import pytest

from resim.messages import EchoHandler, show_messages


@pytest.fixture
def resim_logger():
    """The ``resim`` logger as it was before the test."""
    logger = logging.getLogger("resim")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    logger.handlers = [h for h in logger.handlers if not isinstance(h, EchoHandler)]
    yield logger
    logger.handlers, logger.level, logger.propagate = saved


def test_the_command_line_shows_library_messages_as_text(resim_logger, capsys) -> None:
    show_messages()
    show_messages()  # once: a second call adds no second handler
    logging.getLogger("resim.train.loop").info("epoch 1/2, train loss 0.5")
    logging.getLogger("resim.train.loop").warning("resuming a %d-process run", 2)
    logging.getLogger("resim.study.run").debug("not shown")
    captured = capsys.readouterr()
    assert captured.err == "epoch 1/2, train loss 0.5\nwarning: resuming a 2-process run\n"
    assert captured.out == ""
    assert sum(isinstance(h, EchoHandler) for h in resim_logger.handlers) == 1

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


def test_the_generator_logs_what_it_cannot_compact(resim_logger, tmp_path,
                                                    monkeypatch) -> None:
    """A segment that cannot be compacted is a WARNING of ``resim.generate`` (the command
    line shows it as ``warning: cannot compact ...``), not text printed by the library."""
    import errno

    import resim.generate
    from resim.store import Segment

    def no_space(seg: Segment) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(resim.generate, "dead_space", lambda path: 1 << 40)
    monkeypatch.setattr(resim.generate, "compact", no_space)
    seg = Segment(path=tmp_path / "events-0.h5", first=0, done=1, rows={})
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("resim.generate")
    logger.addHandler(handler)
    try:
        resim.generate._compact(seg)
    finally:
        logger.removeHandler(handler)
    [record] = records
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (f"cannot compact {seg.path}: No space left on device; it "
                                   "is intact, only larger than its data")

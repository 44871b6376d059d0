"""How resim's library messages reach the user.

Library code logs (``logging.getLogger(__name__)``, loggers under ``resim``) instead of
printing. The command line calls :func:`show_messages`, which shows them on stderr as
resim always wrote them: an INFO message as its text, a WARNING as ``warning: <text>``.
Used as a library, resim's messages go wherever the application's logging sends them
(with no configuration, Python shows warnings and drops the rest).
"""

from __future__ import annotations

import logging

import click

LOGGER = "resim"


class EchoHandler(logging.Handler):
    """A handler that writes each message to stderr with ``click.echo`` (the stream of
    the moment: click's test runner captures it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            click.echo(self.format(record), err=True)
        except Exception:  # logging's rule: a message must never break the program
            self.handleError(record)


class PrefixFormatter(logging.Formatter):
    """The message text, with ``warning: ``/``error: `` in front from WARNING up."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {text}"
        return text


def show_messages(level: int = logging.INFO) -> None:
    """Show the messages of resim's loggers from ``level`` up on stderr (once per
    process; they then no longer reach the root logger)."""
    logger = logging.getLogger(LOGGER)
    if any(isinstance(h, EchoHandler) for h in logger.handlers):
        return
    handler = EchoHandler()
    handler.setFormatter(PrefixFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


__all__ = ["EchoHandler", "PrefixFormatter", "show_messages"]

"""One family of errors: everything a user can get wrong, or the machine can refuse.

Every error resim raises on purpose is a :class:`ResimError`: a bad card or config, a
path that is not a data set, an output that exists, a full disk, a corrupt event, a stop
by a signal. Its message is one line that names the file (and the key, segment or event)
and says what to do; its ``exit_code`` is what the ``resim`` command exits with:

- 2: a problem with what was asked (card, config, paths, an existing output);
- 1: a failure while working (a disk that fills up, an unreadable event);
- 128 + N: stopped by signal N, finished work kept (``--resume`` continues).

The command line reports any of them as ``error: <message>`` and nothing else (``resim
--debug`` adds the traceback). The classes live with the code that raises them
(:class:`~resim.card.CardError` in ``card.py``, ...) and join the family here.
"""

from __future__ import annotations


class ResimError(Exception):
    """An error reported to the user as one line; ``exit_code`` for the command line."""

    exit_code: int = 2


class FailureError(ResimError):
    """Work that was under way failed (I/O, a corrupt input record): exit code 1."""

    exit_code = 1


__all__ = ["FailureError", "ResimError"]

"""resim: re-simulation-based self-supervised pre-training data for jets (RS3L).

``resim generate --card CARD`` makes groups of jets that share a frozen hard process and
differ in everything downstream of it; ``resim.open(path)`` reads them back.
"""

from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("resim")
except PackageNotFoundError:  # running from a checkout that is not installed
    __version__ = "0+unknown"

__all__ = ["JetDataset", "__version__", "open"]


def __getattr__(name: str) -> Any:
    # Imported on first use: the reader pulls in awkward (~0.2-0.4 s), which the command
    # line does not need to report a wrong path within a second.
    if name in ("open", "JetDataset"):
        from . import dataset

        return getattr(dataset, name)
    raise AttributeError(f"module 'resim' has no attribute {name!r}")

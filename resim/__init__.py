"""resim: re-simulation-based self-supervised pre-training data for jets (RS3L).

``resim generate --card CARD`` makes groups of jets that share a frozen hard process and
differ in everything downstream of it; ``resim.open(path)`` reads them back.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("resim")
except PackageNotFoundError:  # running from a checkout that is not installed
    __version__ = "0+unknown"

from .dataset import JetDataset, open

__all__ = ["JetDataset", "__version__", "open"]

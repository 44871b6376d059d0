"""Standard jet-tagging benchmarks as resim data sets (``resim convert``).

The converters read the upstream files in blocks and write self-contained resim data sets
(``docs/format.md``: the same tables, columns and attributes as ``resim generate`` makes),
so ``resim finetune`` / ``resim evaluate --data PATH`` read them like any other:

* :func:`convert_jetclass` — JetClass ROOT files (10 classes ``QCD … Tbl``);
* :func:`convert_toptagging` — the Top Tagging reference data set (``qcd``, ``top``).

``docs/benchmarks.md`` says what each upstream field becomes and what the encoder sees.
"""

from .common import SPLITS, ConvertError
from .jetclass import convert_jetclass
from .toptagging import convert_toptagging

__all__ = ["SPLITS", "ConvertError", "convert_jetclass", "convert_toptagging"]

"""resim data sets as the files other trainers read (``resim export``).

* :func:`export_weaver` — JetClass-format ROOT files and a data config for weaver-core
  (ParT's framework);
* :func:`export_omnilearned` — OmniLearned's custom-data HDF5 layout.

Both keep resim's hard-event splits and carry each jet's group, variation and realization,
so re-simulated pairs survive the export. ``docs/export.md`` shows the commands end to end.
"""

from .common import PRESETS, SPLITS, Classes, ExportError
from .omnilearned import export_omnilearned
from .weaver import export_weaver

#: ``resim export --format`` choices.
FORMATS = {"weaver": export_weaver, "omnilearned": export_omnilearned}

__all__ = ["FORMATS", "PRESETS", "SPLITS", "Classes", "ExportError", "export_omnilearned",
           "export_weaver"]

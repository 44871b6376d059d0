"""Write small Les Houches event files for tests (the format MadGraph writes)."""

from __future__ import annotations

import gzip
from pathlib import Path

from resim.generators.hard_process import DECAYED, OUTGOING, HardEvent


def write_lhe(path: Path, events: list[HardEvent], ecm: float = 13600.0,
              undecayed: bool = True, corrupt: int | None = None) -> Path:
    """Hard events as a Les Houches file; ``undecayed`` drops resonance decays (the reader
    must decay them, as with MadGraph output); event ``corrupt`` gets a garbled line."""
    lines = ['<LesHouchesEvents version="1.0">', "<init>",
             f" 2212 2212 {ecm / 2:.6e} {ecm / 2:.6e} 0 0 0 0 3 1",
             " 1.000000e+00 0.000000e+00 1.000000e+00 9999", "</init>"]
    for k, hard in enumerate(events):
        rows = hard.rows
        if undecayed:
            # Keep the incoming partons and the first-generation outgoing particles.
            rows = [r for r in rows if r[2] <= 2 and r[3] <= 2]
            rows = [(r[0], OUTGOING if r[1] == DECAYED else r[1], *r[2:]) for r in rows]
        lines += ["<event>", f" {len(rows)} 9999 1.0 {hard.scale:.8e} {hard.alpha_qed:.8e} "
                  f"{hard.alpha_qcd:.8e}"]
        for r in rows:
            lines.append(" " + " ".join(str(int(x)) for x in r[:6]) + " "
                         + " ".join(f"{x:.10e}" for x in r[6:]))
        if k == corrupt:
            lines[-1] = " 6 1 1 2 501 0 not-a-number 0.0 0.0"
        lines.append("</event>")
    lines.append("</LesHouchesEvents>")
    text = "\n".join(lines) + "\n"
    if path.suffix == ".gz":
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path

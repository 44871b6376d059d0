"""Progress while generating: events, realizations per second and ETA, on a terminal and
in batch logs; the ETA counts only this run's pace (not events made before a resume)."""

from __future__ import annotations

import io
import re
import time

from resim.progress import JetProgress, Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_bar_shows_events_rate_jets_failures_and_eta():
    screen = Terminal()
    bar = Progress(10, stream=screen)
    for _ in range(4):
        time.sleep(0.02)
        bar.update(1, 5, 3, 1)
    frame = screen.getvalue().split("\r")[-1]
    match = re.search(r"4/10 events, (\d+) realizations/s, 12 jets, 4 failed, ETA 0:00:0(\d)",
                      frame)
    assert match, frame
    assert 20 / 0.5 < int(match[1]) < 20 / 0.08  # 20 realizations in ~0.08 s
    assert "[" in frame and "#" in frame  # drawn as a bar
    bar.close()


def test_batch_log_line_every_interval_and_at_the_end():
    log = io.StringIO()
    bar = Progress(6, stream=log, every=3600)
    bar.update(2, 10, 4, 0)
    assert log.getvalue() == ""  # not yet time for a line
    bar.update(4, 20, 8, 2)
    line = log.getvalue().strip()
    assert re.fullmatch(r"generating: 6/6 events \(100%\), \d+ realizations/s, 12 jets, "
                        r"2 failed, ETA 0:00:00", line), line


def test_jet_progress_log_line_counts_jets():
    """``resim export`` / ``convert`` count jets: their batch-log line says so."""
    log = io.StringIO()
    bar = JetProgress(192, label="exporting (omnilearned)", stream=log, every=3600)
    bar.update(192, 192, 192, 0)
    line = log.getvalue().strip()
    assert re.fullmatch(r"exporting \(omnilearned\): 192/192 jets \(100%\), \d+ jets/s", line), line


def test_eta_after_a_resume_counts_only_this_runs_pace():
    log = io.StringIO()
    bar = Progress(100, stream=log, every=0)
    bar.resume_from(90)  # made by the killed run, instantly as far as this one knows
    time.sleep(0.5)
    bar.update(1, 5, 0, 0)
    eta = re.search(r"ETA (\d+):(\d+):(\d+)", log.getvalue())
    # 1 event in 0.5 s, 9 to go: about 4.5 s (not ~0 s as 91 events in 0.5 s would say).
    assert eta and 3 <= int(eta[3]) <= 7, log.getvalue()

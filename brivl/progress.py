"""One progress bar for every long job: a live tqdm bar on a terminal, and off a terminal (a log file, a pipe, CI)
a plain line every few seconds, so a job that runs for minutes still says how far it is and how long is left.

`progress=None` (the library default) shows a bar on a terminal or in a notebook and stays quiet elsewhere (a
server, a test); `progress=True` (what the `brivl` commands pass) also writes the lines to a log or pipe;
`progress=False` shows nothing. BRIVL_PROGRESS_SECONDS sets the seconds between lines (default 5).
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import TextIO

from tqdm import tqdm

LINE_SECONDS = 5.0


class LineStream:
    """A stream for tqdm off a terminal: each refresh becomes one whole line (tqdm's carriage returns dropped)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        line = text.replace("\r", "").strip()
        if line:
            self.stream.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def _in_notebook() -> bool:
    """Whether this process is a Jupyter kernel running code (its IPython shell is the ZMQ one).

    Not merely "ipykernel is imported": a test session or a server may import it (or IPython) without being a
    notebook, and would then print bars where nobody asked for them.
    """
    ipython = sys.modules.get("IPython")
    get_ipython = getattr(ipython, "get_ipython", None)
    shell = get_ipython() if callable(get_ipython) else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def line_seconds() -> float:
    """Seconds between progress lines off a terminal (BRIVL_PROGRESS_SECONDS, default 5)."""
    try:
        return max(0.0, float(os.environ.get("BRIVL_PROGRESS_SECONDS", LINE_SECONDS)))
    except ValueError:
        return LINE_SECONDS


def shown(progress: bool | None) -> bool:
    """Whether a job with this `progress` setting reports anything."""
    if progress is None:
        return sys.stderr.isatty() or _in_notebook()
    return bool(progress)


def bar(iterable: Iterable | None = None, *, total: float | None = None, desc: str | None = None,
        progress: bool | None = None, unit: str = "it", initial: float = 0, **kwargs) -> tqdm:
    """A tqdm bar on stderr as `progress` asks (see the module): live on a terminal, lines in a log, or disabled."""
    common = {"total": total, "desc": desc, "unit": unit, "initial": initial, **kwargs}
    if not shown(progress):
        return tqdm(iterable, disable=True, **common)
    stream = sys.stderr
    if stream.isatty():
        return tqdm(iterable, file=stream, **common)
    if _in_notebook():
        try:
            import ipywidgets  # noqa: F401 - deferred: only to know whether tqdm can draw its notebook widget
            from tqdm.notebook import tqdm as widget
            return widget(iterable, **common)
        except ImportError:
            pass  # no widget library: plain lines, as in a log
    # Off a terminal: one line per refresh, at most every few seconds, ASCII so a log stays readable.
    seconds = line_seconds()
    return tqdm(iterable, file=LineStream(stream), mininterval=seconds, maxinterval=max(seconds, 10.0),
                ascii=True, ncols=100, dynamic_ncols=False, **common)

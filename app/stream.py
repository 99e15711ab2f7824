"""Streaming a render into the page: the render runs in a worker thread and reports each step to a callback; the
handler (a generator) yields the previews as they come. Stop sets the request's flag; the render's next callback
raises `Stopped`, so the loop ends within one step.
"""
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .errors import Stopped


class StopFlags:
    """One stop flag per running request, grouped by the browser session that started it."""

    def __init__(self) -> None:
        self._flags: dict[str, set[threading.Event]] = {}
        self._guard = threading.Lock()

    def new(self, session: str) -> threading.Event:
        flag = threading.Event()
        with self._guard:
            self._flags.setdefault(session, set()).add(flag)
        return flag

    def done(self, session: str, flag: threading.Event) -> None:
        with self._guard:
            self._flags.get(session, set()).discard(flag)

    def stop(self, session: str) -> int:
        """Stop every render of the session; returns how many were running."""
        with self._guard:
            flags = list(self._flags.get(session, ()))
        for f in flags:
            f.set()
        return len(flags)


@dataclass
class Event:
    """What the stream yields: a preview (step, images), the final result, or that the user stopped it."""

    kind: str  # "preview" | "done" | "stopped"
    step: int = 0
    images: object = None
    result: object = None
    seconds: float = 0.0


def stream(run: Callable[[Callable], object], stop: threading.Event, *, interval: float = 0.3) -> Iterator[Event]:
    """Run `run(callback)` in a thread; yield a preview at step 0 and then at most every `interval` seconds,
    then "done" with the result (or "stopped"). An exception inside the render is raised here."""
    q: queue.Queue = queue.Queue()
    t0 = time.perf_counter()
    last = [-1.0]

    def callback(step: int, images) -> None:
        if stop.is_set():
            raise Stopped()
        now = time.perf_counter()
        if last[0] < 0 or now - last[0] >= interval:
            last[0] = now
            q.put(Event("preview", step, images))

    def worker() -> None:
        try:
            q.put(Event("done", result=run(callback)))
        except Stopped:
            q.put(Event("stopped"))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            q.put(e)

    thread = threading.Thread(target=worker, name="studio-render", daemon=True)
    thread.start()
    finished = False
    try:
        while True:
            item = q.get()
            if isinstance(item, BaseException):
                finished = True
                raise item
            item.seconds = time.perf_counter() - t0
            finished = item.kind != "preview"
            yield item
            if finished:
                return
    finally:
        if not finished:
            stop.set()  # the page went away or the event was cancelled: end the render too


def progress_text(doing: str, done: int, total: int, unit: str, seconds: float, rate: float | None) -> str:
    """'scoring images: 64 of 500 images (13%) in 4 s, about 30 s left' (no estimate before a rate is known)."""
    pct = 100 * done / max(total, 1)
    left = ""
    if rate and rate > 0:
        rest = (total - done) / rate
        left = f", about {rest:.0f} s left" if rest < 120 else f", about {rest / 60:.0f} min left"
    return f"{doing}: {done:,} of {total:,} {unit} ({pct:.0f}%) in {seconds:.0f} s{left}"


def counted(run: Callable[[Callable[[int, int], None]], object], stop: threading.Event, doing: str, unit: str,
            shape: Callable[[str], object] = lambda line: line, note: str = "", stopped_note: str = "",
            interval: float = 1.0) -> Iterator:
    """Run `run(report)` (it calls report(done, total) as it goes) in a worker; yield shape(a progress line + note)
    at most every `interval` s, and return its result (`result = yield from counted(...)`; None when stopped, after
    a shape("stopped after N s" + stopped_note)). Closing the generator (the page went away) stops the job too."""
    first = None  # (done, seconds) of the first report: the rate is measured from there (a resumed job starts fast)
    for ev in stream(run, stop, interval=interval):
        if ev.kind == "preview":
            done, total = ev.step, ev.images
            first = first or (done, ev.seconds)
            span = ev.seconds - first[1]
            rate = (done - first[0]) / span if span > 0.5 else None
            yield shape(progress_text(doing, done, total, unit, ev.seconds, rate) + note)
        elif ev.kind == "done":
            return ev.result
        else:
            yield shape(f"stopped after {ev.seconds:.0f} s{stopped_note}")
            return None
    return None

"""The shared generator behind every rendering tab: stream previews, then the final image with its downloads."""
from collections.abc import Callable, Iterator

import gradio as gr

from . import results
from .context import Studio
from .stream import stream


def render_stream(studio: Studio, request: gr.Request | None, run: Callable[[Callable], object], settings: dict,
                  kind: str, label: str, steps: int, hint: Callable[[float | None], str] | None = None,
                  describe: Callable[[float], str] | None = None) -> Iterator[tuple]:
    """Yield (image, status markdown, download files) for each preview and the final result.

    `run(callback)` renders and returns a result with `.images` [n,3,H,W] (and `.history` [steps, n]);
    `describe(final)` says in words what the final objective value means (default: the bare number)."""
    session = studio.session(request)
    flag = studio.stops.new(session)
    try:
        for ev in stream(run, flag):
            if ev.kind == "preview":
                yield (results.to_array(ev.images[0]), f"step {ev.step} of {steps} \u2026 ({ev.seconds:.1f} s)",
                       gr.skip())
            elif ev.kind == "stopped":
                yield gr.skip(), f"stopped after {ev.seconds:.1f} s; press Run to start again", gr.skip()
            else:
                result = ev.result
                final = None
                history = getattr(result, "history", None)
                if history is not None and len(history):
                    final = float(history[-1].flatten()[0])
                info = {**settings, "time_s": round(ev.seconds, 3), "final_objective": final}
                files = results.save(kind, result.images[0], info, label)
                score = "" if final is None else (describe(final) if describe else f", objective {final:.4f}")
                note = hint(final) if hint is not None else ""
                yield (results.to_array(result.images[0]),
                       f"done: {steps} steps in {ev.seconds:.1f} s{score}{note}", files)
    finally:
        studio.stops.done(session, flag)

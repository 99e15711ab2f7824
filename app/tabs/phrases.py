"""Phrases: the top-k phrases of a query from a phrase index (viz.phrases) and their 2-D map (viz.phrase_map).

A missing index is built in a worker thread while the page shows how far it is and how long is left; Stop, or the
page going away, ends the build at its next batch (the shards written so far stay: the next search resumes).
"""
import threading
from collections.abc import Iterator

import gradio as gr
from PIL import Image

from brivl.viz import phrase_map as M
from brivl.viz import phrases as P

from .. import results
from ..context import Studio, model_choice, result_image, run_stop_buttons, text_examples
from ..errors import Stopped, StudioInputError, check_prompt, log, readable
from ..stream import counted

_BUILD = threading.Lock()  # one index build at a time: two would write the same folder
DEFAULT_LIMIT = 5000  # the 5,000 most frequent jieba phrases: ~30 s to build on one CPU core for brivl-lite


def _build(studio: Studio, model_name: str, model, folder, plist: P.PhraseList, flag: threading.Event
           ) -> Iterator[tuple]:
    """Yield status updates while the index builds; returns the index, or None when stopped."""
    def run(callback):
        with _BUILD, studio.pool.shared(model_name):
            try:
                return P.build_index(model, folder, plist, model_name=model_name or studio.pool.default,
                                     progress=False, on_batch=lambda done, total: callback(done, total))
            except Stopped:
                # Said here, in the worker: when the page went away nobody reads the stream any more.
                log.info("phrase index build of %s phrases stopped (Stop, or the page closed); the shards done stay "
                         "in %s for the next search", f"{len(plist.phrases):,}", folder)
                raise

    return (yield from counted(run, flag, "building the index", "phrases",
                               shape=lambda line: (gr.skip(), gr.skip(), line, gr.skip()),
                               note="; **Stop** ends it and keeps what is done",
                               stopped_note="; the batches done are kept on disk, so **Search** again resumes the "
                                            "build"))


def handler(studio: Studio):
    @readable
    def search(query: str, model_name: str, source: str, limit: float, k: float, layout: str, seed: float,
               request: gr.Request):
        query = check_prompt(query, "the query")
        k = int(k)
        if not 1 <= k <= 100:
            raise StudioInputError(f"k must be between 1 and 100, got {k}")
        limit = int(limit) if limit else None
        if limit is not None and limit < k:
            raise StudioInputError(f"the phrase list is cut to {limit} phrases, fewer than k = {k}")
        if layout not in ("umap", "pca"):
            raise StudioInputError(f"unknown layout {layout!r}; choose umap or pca")
        source = (source or "jieba").strip()
        path = None if source == "jieba" else studio.roots.phrase_file(source)  # refused outside --allow-dir
        model = studio.pool.get(model_name)
        plist = P.read_phrases("jieba" if path is None else path, limit)
        folder = P.default_index_folder(model, plist)
        yield gr.skip(), gr.skip(), f"opening the index of {len(plist.phrases):,} phrases \u2026", gr.skip()
        session = studio.session(request)
        flag = studio.stops.new(session)
        try:
            index = yield from _build(studio, model_name, model, folder, plist, flag)
        finally:
            studio.stops.done(session, flag)
        if index is None:
            return
        yield _answer(studio, model_name, model, index, plist, query, k, layout, int(seed))
    return search


def _answer(studio: Studio, model_name: str, model, index: P.PhraseIndex, plist: P.PhraseList, query: str, k: int,
            layout: str, seed: int) -> tuple:
    """The table, the map, the status line and the downloads of one search."""
    name = model_name or studio.pool.default
    with studio.pool.shared(model_name):
        m = M.phrase_map(model, index, query, k, layout, seed, name)
    rows = [[r, p, round(s, 4)] for r, (p, s) in enumerate(zip(m.phrases, m.scores), 1)]
    png = results.results_root() / f"map-{abs(hash((query, k, layout, index.folder.name, seed)))}.png"
    font = M.draw_phrase_maps([[m]], png)
    settings = {"model": name, "query": query, "k": k, "phrases": plist.source, "count": len(index),
                "layout": m.layout, "top": [{"rank": r, "phrase": p, "cosine": s} for r, p, s in rows],
                "font": font["font"]}
    with Image.open(png) as im:
        picture = im.convert("RGB")
    files = results.save("phrases", picture, settings, query)
    return rows, picture, f"top {k} of {len(index):,} phrases ({plist.source}); {m.layout['method']} map", files


def build(studio: Studio) -> None:
    gr.Markdown("The **phrases** nearest to a query in the model's text space (the paper's Fig. 5c uses all of "
                "jieba's 349,045 Chinese phrases). The jieba list is ranked by how often each phrase occurs, so "
                f"the default, its **{DEFAULT_LIMIT:,} most frequent phrases**, is a fair sample of everyday "
                "Chinese. The first search of a list builds its index once (about half a minute for "
                f"{DEFAULT_LIMIT:,}; cached after); all 349,045 take much longer on a CPU, with progress shown "
                "here, and **Stop** keeps what is done for the next search.")
    with gr.Row():
        with gr.Column(scale=1):
            query = gr.Textbox(label="Query", placeholder="e.g. 运动 (sports) or 汽车 (automobile)",
                               elem_id="phrases-query")
            text_examples(query, ["运动", "汽车", "夕阳", "音乐"], "Examples", "phrases-examples")
            model = model_choice(studio)
            with gr.Row():
                source = gr.Textbox(value="jieba", label="Phrase list", info="jieba, or a text file (one per line)")
                limit = gr.Number(value=DEFAULT_LIMIT, precision=0, minimum=0, label="How many phrases",
                                  info="jieba: the N most frequent; a file: its first N; 0 = all")
            with gr.Row():
                k = gr.Slider(1, 100, value=30, step=1, label="Top k")
                layout = gr.Radio(["umap", "pca"], value="umap", label="Map layout")
                seed = gr.Number(value=0, precision=0, minimum=0, label="Seed")
            run, stop = run_stop_buttons("Search phrases")
        with gr.Column(scale=1):
            # No label over the picture: the map's own title says what it shows, and a label would hide it.
            picture = result_image("Phrase map", 480, elem_id="phrases-map", show_label=False)
            status = gr.Markdown(elem_id="phrases-status")
            files = gr.File(label="Download: PNG + top-k (JSON)", file_count="multiple", interactive=False)
    table = gr.Dataframe(headers=["rank", "phrase", "cosine"], label="Top-k phrases", interactive=False,
                         elem_id="phrases-table", max_height=1400)  # all 30 default rows at once, no inner scroll
    inputs = [query, model, source, limit, k, layout, seed]
    run.click(handler(studio), inputs, [table, picture, status, files], api_name="phrases")

    def stop_build(request: gr.Request) -> None:
        # Not a cancel: the build stops at its next batch and the search then says so in the page.
        studio.stops.stop(studio.session(request))

    stop.click(stop_build, None, None, api_name="phrases_stop", queue=False)

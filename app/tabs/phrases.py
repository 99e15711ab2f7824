"""Phrases: the top-k phrases of a query from a phrase index (viz.phrases) and their 2-D map (viz.phrase_map)."""
import threading

import gradio as gr
from PIL import Image

from brivl.viz import phrase_map as M
from brivl.viz import phrases as P

from .. import results
from ..context import Studio, model_choice, result_image
from ..errors import StudioInputError, check_prompt, readable

_BUILD = threading.Lock()  # one index build at a time: two would write the same folder


def handler(studio: Studio):
    @readable
    def search(query: str, model_name: str, source: str, limit: float, k: float, layout: str, seed: float):
        query = check_prompt(query, "the query")
        k = int(k)
        if not 1 <= k <= 100:
            raise StudioInputError(f"k must be between 1 and 100, got {k}")
        limit = int(limit) if limit else None
        if limit is not None and limit < k:
            raise StudioInputError(f"the phrase list is cut to {limit} phrases, fewer than k = {k}")
        source = (source or "jieba").strip()
        path = None if source == "jieba" else studio.roots.phrase_file(source)  # refused outside --allow-dir
        model = studio.pool.get(model_name)
        plist = P.read_phrases("jieba" if path is None else path, limit)
        folder = P.default_index_folder(model, plist)
        yield gr.skip(), gr.skip(), f"building or opening the index of {len(plist.phrases):,} phrases \u2026", gr.skip()
        with _BUILD, studio.pool.shared(model_name):
            index = P.build_index(model, folder, plist, model_name=model_name or studio.pool.default,
                                  progress=False)
        if layout not in ("umap", "pca"):
            raise StudioInputError(f"unknown layout {layout!r}; choose umap or pca")
        with studio.pool.shared(model_name):
            m = M.phrase_map(model, index, query, k, layout, int(seed), model_name or studio.pool.default)
        rows = [[r, p, round(s, 4)] for r, (p, s) in enumerate(zip(m.phrases, m.scores), 1)]
        png = results.results_root() / f"map-{abs(hash((query, k, layout, folder.name, seed)))}.png"
        font = M.draw_phrase_maps([[m]], png)
        settings = {"model": model_name or studio.pool.default, "query": query, "k": k, "phrases": plist.source,
                    "count": len(index), "layout": m.layout, "top": [{"rank": r, "phrase": p, "cosine": s}
                                                                     for r, p, s in rows], "font": font["font"]}
        with Image.open(png) as im:
            picture = im.convert("RGB")
        files = results.save("phrases", picture, settings, query)
        yield rows, picture, f"top {k} of {len(index):,} phrases ({plist.source}); {m.layout['method']} map", files
    return search


def build(studio: Studio) -> None:
    gr.Markdown("The **phrases** nearest to a query in the model's text space (the paper's Fig. 5c uses jieba's "
                "349,045 Chinese phrases). The first query of a phrase list builds its index once (it is cached); "
                "keep the list short for a first try.")
    with gr.Row():
        with gr.Column(scale=1):
            query = gr.Textbox(label="Query", placeholder="e.g. 运动 (sports) or 汽车 (automobile)")
            gr.Examples([["运动"], ["汽车"], ["夕阳"], ["music"]], [query], label="Examples")
            model = model_choice(studio)
            with gr.Row():
                source = gr.Textbox(value="jieba", label="Phrase list", info="jieba, or a text file (one per line)")
                limit = gr.Number(value=5000, precision=0, minimum=0, label="Use the first N phrases",
                                  info="0 = all")
            with gr.Row():
                k = gr.Slider(1, 100, value=30, step=1, label="Top k")
                layout = gr.Radio(["umap", "pca"], value="umap", label="Map layout")
                seed = gr.Number(value=0, precision=0, minimum=0, label="Seed")
            run = gr.Button("Search phrases", variant="primary")
        with gr.Column(scale=1):
            picture = result_image("Query (star) and its top-k phrases", 480)
            status = gr.Markdown()
            files = gr.File(label="Download: PNG + top-k (JSON)", file_count="multiple", interactive=False)
    table = gr.Dataframe(headers=["rank", "phrase", "cosine"], label="Top-k phrases", interactive=False)
    run.click(handler(studio), [query, model, source, limit, k, layout, seed], [table, picture, status, files],
              api_name="phrases")

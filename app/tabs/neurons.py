"""Neurons: maximise one channel of a layer (LLP by default) under an optional text (viz.neuron, Fig. 2d), and
rank the images of a folder by that channel (viz.neurons.top_activating)."""
import threading

import gradio as gr

from brivl import viz
from brivl.images import load_images
from brivl.viz import neurons as N
from brivl.viz.figures import check_channels

from .. import results
from ..context import (
    EXAMPLE_DIR,
    Studio,
    model_choice,
    render_controls,
    result_image,
    run_stop_buttons,
    text_examples,
    wire_stop,
)
from ..errors import StudioInputError, check_prompt, check_render, readable
from ..rendering import render_stream
from ..stream import counted


def _channel(model, layer: str, channel) -> tuple[str, int]:
    layer = (layer or "llp").strip()
    if layer not in model.feature_layers():
        raise StudioInputError(f"layer {layer!r} is not in this model; pick one of {', '.join(model.feature_layers())}")
    try:
        channel = int(channel)
    except (TypeError, ValueError):
        raise StudioInputError("the channel must be a whole number, e.g. 108") from None
    check_channels(model, layer, [channel])  # ChannelError (a ValueError) names the valid range
    return layer, channel


RELU6_CEILING = 6.0  # EfficientNet's activations are ReLU6: a channel's mean cannot pass 6


def describe_neuron(final: float, text: str | None, text_weight: float) -> str:
    """The final objective of a neuron render in words: the channel's mean activation (+ the weighted cosine)."""
    what = "the channel's mean activation" + (f" + {text_weight:g} \u00d7 the cosine with \u201c{text}\u201d"
                                               if text else "")
    note = ""
    if final >= RELU6_CEILING - 1e-3:
        note = (f"; {RELU6_CEILING:g} is the most a channel can give (its activation is ReLU6, capped at 6): the "
                f"image drives the whole channel to its ceiling")
    return f"; objective {final:.3f} = {what}{note}"


def handlers(studio: Studio):
    @readable
    def visualise(model_name: str, layer: str, channel: float, text: str, text_weight: float, steps: float,
                  size: float, seed: float, param: str, decorrelate: bool, lr: float, request: gr.Request):
        steps, size, seed, lr = check_render(steps, size, seed, lr)
        text = check_prompt(text, "the text constraint") if (text or "").strip() else None
        model = studio.pool.get(model_name)
        layer, channel = _channel(model, layer, channel)
        settings = {"model": model_name or studio.pool.default, "layer": layer, "channel": channel, "text": text,
                    "text_weight": float(text_weight), "steps": steps, "size": size, "seed": seed, "param": param,
                    "decorrelate": bool(decorrelate), "lr": lr}
        def run(callback):
            with studio.pool.exclusive(model_name):  # a forward hook reads the channel: the model to itself
                return viz.neuron(model, layer, channel, text, text_weight=float(text_weight), steps=steps,
                                  size=size, seed=seed, param=param, decorrelate=bool(decorrelate), lr=lr,
                                  callback=callback, every=1, progress=False)

        label = f"{layer}-{channel}" + (f"-{text}" if text else "")
        def hint(final: float | None) -> str:
            if text is None and final is not None and abs(final) < 1e-9:
                return (". The channel stayed silent: from a grey start a channel behind a ReLU has nothing to "
                        "follow. Add a text constraint, or try another channel.")
            return ""

        yield from render_stream(studio, request, run, settings, "neuron", label, steps, hint,
                                 describe=lambda final: describe_neuron(final, text, float(text_weight)))

    @readable
    def top_images(model_name: str, layer: str, channel: float, folder: str, k: float):
        root = studio.roots.folder(folder)
        paths = studio.roots.keep(N.image_files(root, 500))  # symlinks out of the roots are dropped
        if not paths:
            raise StudioInputError(f"{folder.strip()}: no image files inside the folders this studio may read")
        model = studio.pool.get(model_name)
        layer, channel = _channel(model, layer, channel)
        k = max(1, min(int(k), 48))

        def run(report):
            with studio.pool.exclusive(model_name):
                return N.top_activating(model, layer, channel, paths, k=k, callback=report)

        # Progress while it scores (500 images take ~30 s on a CPU); a closed page stops it.
        top = yield from counted(run, threading.Event(), f"scoring {layer}-{channel}", "images",
                                 shape=lambda line: (gr.skip(), gr.skip(), line, gr.skip()))
        if top is None:
            return
        gallery = [(str(p), f"#{i} {s:.3f}  {p.name}") for i, (p, s) in enumerate(zip(top.paths, top.scores), 1)]
        grid = results.side_by_side([load_images([p], 128)[0] for p in top.paths[:8]])
        files = results.save("top-images", grid, {"model": model_name or studio.pool.default, "layer": layer,
                                                  "channel": channel, "folder": str(root), "k": k,
                                                  "scored": len(top.all_paths),
                                                  "top": [{"path": str(p), "activation": s}
                                                          for p, s in zip(top.paths, top.scores)]},
                             f"{layer}-{channel}")
        rows = [[i, p.name, round(float(s), 4)] for i, (p, s) in enumerate(zip(top.paths, top.scores), 1)]
        yield (gallery, rows, f"{len(top.all_paths)} images scored; the strongest {len(top.paths)} shown (activation: "
                              f"the channel's mean over the image)", files)
    return visualise, top_images


def build(studio: Studio) -> None:
    gr.Markdown("Pick a **neuron** — a channel of a layer; `llp` is the CNN's last layer before pooling (the "
                "paper's LLP-108, LLP-456, LLP-678). Its visualisation maximises the channel, optionally while the "
                "image also matches a text. Then see which images of a folder excite it most.")
    visualise, top_images = handlers(studio)
    with gr.Row():
        with gr.Column(scale=1):
            model = model_choice(studio)
            layers = list(studio.pool.get(None).feature_layers())
            with gr.Row():
                layer = gr.Dropdown(layers, value="llp" if "llp" in layers else layers[0], label="Layer",
                                    allow_custom_value=True)
                channel = gr.Number(value=108, precision=0, minimum=0, label="Channel", info="e.g. 108, 456, 678")
            with gr.Row():
                text = gr.Textbox(label="Text constraint (optional)", placeholder="e.g. forest, 山脉 — or leave empty",
                                  elem_id="neurons-text")
                text_weight = gr.Number(value=1.0, label="Text weight")
            text_examples(text, ["forest", "mountains", "森林", "雪山"], "Constraints", "neurons-examples")
            steps, size, seed, param, decorrelate, lr = render_controls(studio)
            run, stop = run_stop_buttons("Visualise neuron")
        with gr.Column(scale=1):
            image = result_image("Neuron visualisation (updates while it runs)", 360, elem_id="neurons-output")
            status = gr.Markdown("Press **Visualise neuron** to start.", elem_id="neurons-status")
            files = gr.File(label="Download: PNG + settings (JSON)", file_count="multiple", interactive=False)
    with gr.Row():
        with gr.Column(scale=1):
            folder = gr.Textbox(label="Folder of images on this machine", placeholder="/path/to/photos",
                                value=str(EXAMPLE_DIR) if EXAMPLE_DIR.is_dir() else "", elem_id="neurons-folder")
            k = gr.Slider(1, 48, value=8, step=1, label="How many")
            rank = gr.Button("Find top-activating images", elem_id="neurons-rank")
        with gr.Column(scale=2):
            # Whole pictures (contain, not cropped) with their rank and activation under each.
            gallery = gr.Gallery(label="Top-activating images (mean activation of the channel)", columns=4,
                                 height="auto", object_fit="contain", elem_id="neurons-gallery")
            scores = gr.Dataframe(headers=["rank", "image", "activation"], label="Activations", interactive=False,
                                  elem_id="neurons-scores")
            top_status = gr.Markdown(elem_id="neurons-top-status")
            top_files = gr.File(label="Download: contact sheet PNG + ranking (JSON)", file_count="multiple",
                                interactive=False)
    event = run.click(visualise, [model, layer, channel, text, text_weight, steps, size, seed, param, decorrelate, lr],
                      [image, status, files], api_name="neuron")
    wire_stop(studio, stop, event, "neuron_stop")
    param.change(lambda p: gr.update(visible=p == "fft"), param, decorrelate, api_name=False, queue=False)
    rank.click(top_images, [model, layer, channel, folder, k], [gallery, scores, top_status, top_files],
               api_name="top_images")

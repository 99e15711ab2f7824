"""VQGAN: text -> image by VQGAN inversion (viz.vqgan_inversion.vqgan_imagine, the paper's Fig. 3), streamed."""
import gradio as gr

from brivl.viz.vqgan_inversion import vqgan_imagine as run_vqgan

from ..context import (
    EXAMPLES_EN,
    EXAMPLES_ZH,
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


def describe_cutouts(final: float) -> str:
    """The final objective of a VQGAN inversion in words: the mean cosine of the picture's cutouts with the text."""
    return (f"; the picture's random cutouts have a mean cosine of {final:.3f} with the text (the objective it "
            f"raised; 1 would be the same direction in the model's joint space)")


def handler(studio: Studio):
    @readable
    def vqgan_imagine(prompt: str, model_name: str, vqgan_name: str, steps: float, size: float, seed: float,
                      param: str, cutn: float, lr: float, request: gr.Request):
        text = check_prompt(prompt)
        steps, size, seed, lr = check_render(steps, size, seed, lr)
        if param not in ("z", "logits"):
            raise StudioInputError(f"unknown token parameterisation {param!r}; choose z or logits")
        cutn = int(cutn)
        if not 1 <= cutn <= 64:
            raise StudioInputError(f"cutouts must be between 1 and 64, got {cutn}")
        model = studio.pool.get(model_name)
        vq = studio.get_vqgan(vqgan_name)
        settings = {"model": model_name or studio.pool.default, "vqgan": vqgan_name or studio.vqgan, "text": text,
                    "steps": steps, "size": size, "seed": seed, "param": param, "cutn": cutn, "lr": lr}

        def run(callback):
            # vqgan_imagine seeds the global RNG for its augmentations (and restores it): one at a time.
            with studio.vqgan_render_lock, studio.pool.shared(model_name):
                return run_vqgan(model, vq, text, steps=steps, size=size, seed=seed, param=param, cutn=cutn, lr=lr,
                                 callback=callback, every=1, progress=False)

        yield from render_stream(studio, request, run, settings, "vqgan", text, steps, describe=describe_cutouts)
    return vqgan_imagine


def build(studio: Studio) -> None:
    gr.Markdown("Text to image by **VQGAN inversion** (the paper's Fig. 3): the model steers the codes of a "
                "frozen VQGAN until the decoded picture matches your text. `lite` is the VQGAN embedded in brivl; "
                "a folder or a taming `.ckpt` (with its `.yaml` beside it) works too.")
    with gr.Row():
        with gr.Column(scale=1):
            prompt = gr.Textbox(label="Prompt", placeholder="e.g. 云中的城堡 or castle in the clouds", lines=2,
                                elem_id="vqgan-prompt")
            text_examples(prompt, ["云中的城堡", "燃烧的大海", EXAMPLES_ZH[0], "castle in the clouds", "glowing forest",
                                   EXAMPLES_EN[0]], "Examples (中文 / English)", "vqgan-examples")
            with gr.Row():
                model = model_choice(studio)
                vq = gr.Textbox(value=studio.vqgan, label="VQGAN", info="lite, a VQGAN folder, or a taming .ckpt")
            steps, size, seed, param, _, lr = render_controls(studio, params=("z", "logits"), lr=0.1)
            cutn = gr.Slider(1, 64, value=8, step=1, label="Cutouts per step", info="more: steadier, slower")
            run, stop = run_stop_buttons("Generate")
        with gr.Column(scale=1):
            image = result_image("Generated image (updates while it runs)", 420, elem_id="vqgan-output")
            status = gr.Markdown("Press **Generate** to start.", elem_id="vqgan-status")
            files = gr.File(label="Download: PNG + settings (JSON)", file_count="multiple", interactive=False)
    event = run.click(handler(studio), [prompt, model, vq, steps, size, seed, param, cutn, lr], [image, status, files],
                      api_name="vqgan")
    wire_stop(studio, stop, event, "vqgan_stop")

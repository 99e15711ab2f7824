"""Imagine: a text (Chinese or English) -> network visualisation (viz.imagine), streamed step by step."""
import gradio as gr

from brivl import viz
from brivl.errors import UserInputError

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
from ..errors import check_prompt, check_render, readable
from ..rendering import render_stream


def describe_match(final: float) -> str:
    """The final objective of a text render in words: the image's cosine with the text."""
    return (f"; the image's cosine with the text is {final:.3f} (the objective it raised; 1 would be the same "
            f"direction in the model's joint space)")


def handler(studio: Studio):
    @readable
    def imagine(prompt: str, model_name: str, steps: float, size: float, seed: float, param: str, decorrelate: bool,
                lr: float, request: gr.Request):
        text = check_prompt(prompt)
        steps, size, seed, lr = check_render(steps, size, seed, lr)
        if param not in ("fft", "pixel"):
            raise UserInputError(f"unknown parameterisation {param!r}; choose fft or pixel")
        model = studio.pool.get(model_name)
        settings = {"model": model_name or studio.pool.default, "text": text, "steps": steps, "size": size,
                    "seed": seed, "param": param, "decorrelate": bool(decorrelate), "lr": lr,
                    "transforms": "standard"}

        def run(callback):
            with studio.pool.shared(model_name):
                return viz.imagine(model, text, steps=steps, size=size, seed=seed, param=param,
                                   decorrelate=bool(decorrelate), lr=lr, callback=callback, every=1, progress=False)

        yield from render_stream(studio, request, run, settings, "imagine", text, steps, describe=describe_match)
    return imagine


def build(studio: Studio) -> None:
    gr.Markdown("Type what the model should **imagine** — Chinese or English. It starts from noise and changes "
                "the pixels until the image matches your text (the paper's network visualisation, Fig. 2).")
    with gr.Row():
        with gr.Column(scale=1):
            prompt = gr.Textbox(label="Prompt", placeholder="e.g. 夕阳下的大海 or mountains with forests", lines=2,
                                elem_id="imagine-prompt")
            text_examples(prompt, EXAMPLES_ZH + EXAMPLES_EN, "Examples (中文 / English)", "imagine-examples")
            model = model_choice(studio)
            steps, size, seed, param, decorrelate, lr = render_controls(studio)
            run, stop = run_stop_buttons("Imagine")
        with gr.Column(scale=1):
            image = result_image("Imagined image (updates while it runs)", 420, elem_id="imagine-output")
            status = gr.Markdown("Press **Imagine** to start.", elem_id="imagine-status")
            files = gr.File(label="Download: PNG + settings (JSON)", file_count="multiple", interactive=False)
    inputs = [prompt, model, steps, size, seed, param, decorrelate, lr]
    event = run.click(handler(studio), inputs, [image, status, files], api_name="imagine")
    prompt.submit(handler(studio), inputs, [image, status, files], api_name=False)
    param.change(lambda p: gr.update(visible=p == "fft"), param, decorrelate, api_name=False, queue=False)
    wire_stop(studio, stop, event, "imagine_stop")

"""Compare: the same prompt and settings imagined by two models side by side (e.g. brivl-lite and a checkpoint)."""
import gradio as gr
import torch

from brivl import viz

from .. import results
from ..context import (
    EXAMPLES_EN,
    EXAMPLES_ZH,
    Studio,
    model_choice,
    render_controls,
    result_image,
    run_stop_buttons,
    wire_stop,
)
from ..errors import StudioInputError, check_prompt, check_render, readable
from ..stream import stream


def handler(studio: Studio):
    @readable
    def compare(prompt: str, name_a: str, name_b: str, steps: float, size: float, seed: float, param: str,
                decorrelate: bool, lr: float, request: gr.Request):
        text = check_prompt(prompt)
        steps, size, seed, lr = check_render(steps, size, seed, lr)
        if not (name_b or "").strip():
            raise StudioInputError("choose Model B (a model the studio offers, or type a model folder's path, e.g. "
                                   "hf:FOLDER for a CLIP-family peer) to compare Model A with")
        models = [studio.pool.get(name_a), studio.pool.get(name_b)]  # both load (or fail) before anything runs

        def run(side: int, callback):
            with studio.pool.shared([name_a, name_b][side]):
                return viz.imagine(models[side], text, callback=callback, **kwargs)

        names = [name_a or studio.pool.default, name_b.strip()]
        kwargs = {"steps": steps, "size": size, "seed": seed, "param": param, "decorrelate": bool(decorrelate),
                  "lr": lr, "every": 1, "progress": False}
        session = studio.session(request)
        flag = studio.stops.new(session)
        finals, out = [None, None], [gr.skip(), gr.skip()]
        try:
            for side in range(2):  # one after the other: two renders at once would halve each one's speed
                for ev in stream(lambda cb, s=side: run(s, cb), flag):
                    if ev.kind == "stopped":
                        yield *out, f"stopped during {names[side]}", gr.skip()
                        return
                    image = ev.images[0] if ev.kind == "preview" else ev.result.images[0]
                    out[side] = results.to_array(image)
                    if ev.kind == "done":
                        finals[side] = (ev.result, ev.seconds)
                    yield *out, f"{names[side]}: step {ev.step if ev.kind == 'preview' else steps} of {steps}", \
                        gr.skip()
        finally:
            studio.stops.done(session, flag)
        images = [r.images[0] for r, _ in finals]
        cross = _cross(studio, models, names, images, text)
        sheet = results.side_by_side(images)
        settings = {"text": text, "models": names, "steps": steps, "size": size, "seed": seed, "param": param,
                    "decorrelate": bool(decorrelate), "lr": lr,
                    "final_objective": {n: float(r.history[-1, 0]) for n, (r, _) in zip(names, finals)},
                    "cross_cosine": cross, "time_s": {n: round(s, 3) for n, (_, s) in zip(names, finals)}}
        files = results.save("compare", sheet, settings, text)
        yield *out, _cross_text(names, cross), files
    return compare


def _cross(studio: Studio, models: list, names: list[str], images: list, text: str) -> list[dict[str, float]]:
    """Each render's cosine to the text under both models: [{A: .., B: ..} for A's render, ... for B's]."""
    scores = []
    for name, model in zip(names, models):  # one lock at a time: the same name twice must not nest its lock
        with studio.pool.shared(name):
            scores.append(viz.compare.cross_scores([model], torch.stack(images), [text, text])[0])  # [render]
    scores = torch.stack(scores)  # [judge, render]
    return [{f"A ({names[0]})": round(float(scores[0, r]), 4), f"B ({names[1]})": round(float(scores[1, r]), 4)}
            for r in range(2)]


def _cross_text(names: list[str], cross: list[dict[str, float]]) -> str:
    """The cross-model scores as a small markdown table: rows are renders, columns the models scoring them."""
    head = "| render by | cosine under A | cosine under B |\n|---|---|---|\n"
    rows = "".join(f"| {w} {names[i]} | {a:+.4f} | {b:+.4f} |\n"
                   for i, (w, (a, b)) in enumerate(zip("AB", (tuple(c.values()) for c in cross))))
    return (f"done. Each render's cosine to the text under both models (a render that only its own model scores "
            f"high is a pattern of that model, not a picture of the text):\n\n{head}{rows}")


def _second_model(studio: Studio) -> str | None:
    """Model B's first value: the second model the studio offers that is not the random `tiny`; else none."""
    return next((n for n in studio.pool.names[1:] if n != "tiny"), None)


def build(studio: Studio) -> None:
    gr.Markdown("The same prompt, seed and settings on **two models** side by side — e.g. brivl-lite against a "
                "checkpoint you trained or converted, or a CLIP-family peer (`hf:FOLDER`: CLIP, Chinese-CLIP, "
                "AltCLIP, SigLIP). Each render is then scored under *both* models. Note: `tiny` is a model with "
                "seeded random weights for tests; its renders mean nothing.")
    with gr.Row():
        prompt = gr.Textbox(label="Prompt", placeholder="e.g. 雪山下的森林 or mountains with snow", scale=3)
        name_a = model_choice(studio, "Model A")
        name_b = gr.Dropdown(studio.pool.names, value=_second_model(studio), label="Model B",
                             allow_custom_value=True,
                             info="choose one, or type a model folder's path (hf:FOLDER for a CLIP-family peer); "
                                  "tiny is random, for tests")
    gr.Examples([[EXAMPLES_ZH[1]], [EXAMPLES_EN[0]]], [prompt], label="Examples")
    steps, size, seed, param, decorrelate, lr = render_controls(studio)
    run, stop = run_stop_buttons("Compare")
    with gr.Row():
        image_a = result_image("Model A", 320)
        image_b = result_image("Model B", 320)
    status = gr.Markdown()
    files = gr.File(label="Download: side-by-side PNG + settings (JSON)", file_count="multiple", interactive=False)
    event = run.click(handler(studio), [prompt, name_a, name_b, steps, size, seed, param, decorrelate, lr],
                      [image_a, image_b, status, files], api_name="compare")
    wire_stop(studio, stop, event, "compare_stop")

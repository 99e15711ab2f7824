"""Compare: the same prompt and settings imagined by two models side by side (e.g. brivl-lite and a checkpoint)."""
import gradio as gr

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
from ..errors import check_prompt, check_render, readable
from ..stream import stream


def handler(studio: Studio):
    @readable
    def compare(prompt: str, name_a: str, name_b: str, steps: float, size: float, seed: float, param: str,
                decorrelate: bool, lr: float, request: gr.Request):
        text = check_prompt(prompt)
        steps, size, seed, lr = check_render(steps, size, seed, lr)
        models = [studio.pool.get(name_a), studio.pool.get(name_b)]  # both load (or fail) before anything runs

        def run(side: int, callback):
            with studio.pool.shared([name_a, name_b][side]):
                return viz.imagine(models[side], text, callback=callback, **kwargs)

        names = [name_a or studio.pool.default, name_b or studio.pool.default]
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
        sheet = results.side_by_side([r.images[0] for r, _ in finals])
        settings = {"text": text, "models": names, "steps": steps, "size": size, "seed": seed, "param": param,
                    "decorrelate": bool(decorrelate), "lr": lr,
                    "final_objective": {n: float(r.history[-1, 0]) for n, (r, _) in zip(names, finals)},
                    "time_s": {n: round(s, 3) for n, (_, s) in zip(names, finals)}}
        files = results.save("compare", sheet, settings, text)
        score = ", ".join(f"{n}: {v:.4f}" for n, v in settings["final_objective"].items())
        yield *out, f"done (text match {score})", files
    return compare


def build(studio: Studio) -> None:
    gr.Markdown("The same prompt, seed and settings on **two models** side by side — e.g. brivl-lite against a "
                "checkpoint you trained or converted (type its folder).")
    with gr.Row():
        prompt = gr.Textbox(label="Prompt", placeholder="e.g. 雪山下的森林 or mountains with snow", scale=3)
        name_a = model_choice(studio, "Model A")
        second = studio.pool.names[1] if len(studio.pool.names) > 1 else studio.pool.default
        name_b = gr.Dropdown(studio.pool.names, value=second, label="Model B", allow_custom_value=True,
                             info="a preset or the path of a model folder")
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

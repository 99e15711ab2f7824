"""Patches: which of the 37 MSPP patches (a 6x6 grid plus the whole image) match a text, as a heatmap over the
image (viz.attribution.patch_similarity / patch_heatmap / overlay)."""
import gradio as gr
import torch
import torch.nn.functional as F

from brivl.twotower import HasPatches
from brivl.viz import attribution as A

from .. import results
from ..context import Studio, example_photos, model_choice, result_image, upload_image
from ..errors import StudioInputError, check_image_file, check_prompt, readable

SHOW_SIDE = 384  # the overlay's longer side in the page


def _where(box) -> str:
    """'row 2, column 5 of 6' for a grid box (x0, y0, x1, y1 as fractions), 'whole image' for the full one."""
    x0, y0, x1, y1 = (float(v) for v in box)
    if x1 - x0 > 0.99 and y1 - y0 > 0.99:
        return "whole image"
    n = max(1, round(1 / max(x1 - x0, 1e-6)))
    return f"row {round(y0 * n) + 1}, column {round(x0 * n) + 1} of {n}"


def with_colour_bar(picture: torch.Tensor, lo: float, hi: float) -> "np.ndarray":  # noqa: F821
    """The overlay [3, H, W] with a colour bar beside it: which colour is which cosine (the map spans lo..hi)."""
    from matplotlib.cm import ScalarMappable  # deferred: matplotlib loads only to draw
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    h, w = picture.shape[-2:]
    fig = Figure(figsize=(w / 100 + 1.3, h / 100 + 0.2), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(picture.permute(1, 2, 0).numpy())
    ax.set_axis_off()
    bar = fig.colorbar(ScalarMappable(Normalize(lo, hi if hi > lo else lo + 1e-6), "inferno"), ax=ax, shrink=0.9)
    bar.set_label("cosine with the text", fontsize=9)
    bar.ax.tick_params(labelsize=8)
    return results.figure_array(fig)


def handler(studio: Studio):
    @readable
    def patches(image_path: str, text: str, model_name: str, alpha: float):
        pixels = check_image_file(image_path)
        text = check_prompt(text, "the text")
        model = studio.pool.get(model_name)
        if not isinstance(model, HasPatches):
            raise StudioInputError(f"{model_name} has no patches (patch_embeddings); pick a BriVL model")
        small = F.interpolate(pixels[None], size=(model.image_size,) * 2, mode="bilinear", align_corners=False,
                              antialias=True).clamp(0, 1)
        with studio.pool.shared(model_name):
            scores = A.patch_similarity(model, small, text)[0]  # [P]
        h, w = pixels.shape[-2:]
        scale = SHOW_SIDE / max(h, w)
        shown = F.interpolate(pixels[None], size=(max(1, round(h * scale)), max(1, round(w * scale))),
                              mode="bilinear", align_corners=False, antialias=True)[0].clamp(0, 1)
        boxes = A.patch_boxes(model, scores.numel())
        heat = A.paint_boxes(scores[None].float().cpu(), boxes, tuple(shown.shape[-2:]))[0]
        picture = A.overlay(shown, heat, alpha=float(alpha), clip=1.0)
        lo, hi = float(heat.min()), float(heat.max())
        best = torch.argsort(scores, descending=True)[:5].tolist()
        rows = [[i, _where(boxes[i]), round(float(scores[i]), 4),
                 [round(float(v), 3) for v in boxes[i].tolist()]] for i in best]
        settings = {"model": model_name or studio.pool.default, "text": text, "alpha": float(alpha),
                    "patches": [{"index": i, "box_xyxy": [round(float(v), 4) for v in boxes[i].tolist()],
                                 "cosine": float(scores[i])} for i in range(scores.numel())]}
        files = results.save("patches", picture, settings, text)
        return with_colour_bar(picture, lo, hi), rows, files
    return patches


def build(studio: Studio) -> None:
    gr.Markdown("Which **patches** of an image match a text? BriVL embeds 37 patches (a 6\u00d76 grid plus the "
                "whole image) in the joint space; each grid cell is coloured by its cosine with the text "
                "(bright = a good match; the bar beside the picture gives the scale).")
    with gr.Row():
        with gr.Column(scale=1):
            image = upload_image("Image", "patches-image")
            text = gr.Textbox(label="Text", placeholder="e.g. the sun, 树木, a red roof", elem_id="patches-text")
            with gr.Row():
                model = model_choice(studio)
                alpha = gr.Slider(0.1, 0.9, value=0.55, step=0.05, label="Heatmap opacity")
            go = gr.Button("Find matching patches", variant="primary", elem_id="patches-run")
            photos = example_photos()
            if photos:
                gr.Examples([[photos[-1], "the sun"], [photos[0], "树木"]], [image, text], label="Examples")
        with gr.Column(scale=1):
            picture = result_image("Patch heatmap", 360, elem_id="patches-output")
            table = gr.Dataframe(headers=["patch", "where", "cosine", "box (x0, y0, x1, y1)"],
                                 label="Best five patches", interactive=False, elem_id="patches-table")
            files = gr.File(label="Download: PNG + all 37 scores (JSON)", file_count="multiple", interactive=False)
    go.click(handler(studio), [image, text, model, alpha], [picture, table, files], api_name="patches")

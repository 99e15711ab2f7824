"""Classify & retrieve: an uploaded image against typed labels (zero-shot), or a text against a folder of images."""
import threading
from pathlib import Path

import gradio as gr
import torch

from brivl.eval import class_embeddings, zero_shot_logits
from brivl.eval.suite import embed_image_files
from brivl.images import load_images
from brivl.viz import fonts
from brivl.viz.neurons import image_files

from .. import results
from ..context import EXAMPLE_DIR, Studio, example_photos, model_choice, upload_image
from ..stream import counted
from ..errors import StudioInputError, check_image_file, check_labels, check_prompt, readable


def _bar_chart(labels: list[str], probs: list[float], title: str):
    from matplotlib.figure import Figure  # deferred: matplotlib loads only to draw

    font = fonts.find_cjk_font()
    fig = Figure(figsize=(5, 0.35 * len(labels) + 0.9), dpi=120, layout="constrained")
    ax = fig.add_subplot()
    ax.barh(range(len(labels))[::-1], probs, color="#5b6bd6")
    ax.set_yticks(range(len(labels))[::-1], labels, **({"fontproperties": font.properties(9)} if font else {}))
    ax.set_xlim(0, 1)
    ax.set_xlabel("probability")
    ax.set_title(title, fontsize=9)
    return results.figure_array(fig)


def handlers(studio: Studio):
    @readable
    def classify(image_path: str, labels_text: str, template: str, model_name: str):
        pixels = check_image_file(image_path)
        labels = check_labels(labels_text)
        template = (template or "{}").strip() or "{}"
        if "{}" not in template:
            raise StudioInputError("the prompt template needs {} where the label goes, e.g. 'a photo of a {}.'")
        model = studio.pool.get(model_name)
        small = torch.nn.functional.interpolate(pixels[None], size=(model.image_size,) * 2, mode="bilinear",
                                                align_corners=False).clamp(0, 1)
        with torch.no_grad(), studio.pool.shared(model_name):
            emb = class_embeddings(model, labels, [template])
            cos = zero_shot_logits(model, small, emb)[0]
        temperature = float(getattr(getattr(model, "config", None), "temperature", 0.07) or 0.07)
        probs = torch.softmax(cos / temperature, dim=0)
        order = torch.argsort(probs, descending=True).tolist()
        ranked = [labels[i] for i in order]
        chart = _bar_chart(ranked, [float(probs[i]) for i in order], f"zero-shot, template {template!r}")
        settings = {"model": model_name or studio.pool.default, "labels": labels, "template": template,
                    "temperature": temperature,
                    "scores": [{"label": labels[i], "cosine": float(cos[i]), "probability": float(probs[i])}
                               for i in order]}
        files = results.save("classify", chart, settings, ranked[0])
        return {labels[i]: float(probs[i]) for i in order}, files

    @readable
    def retrieve(text: str, folder: str, k: float, model_name: str):
        text = check_prompt(text, "the text")
        root = studio.roots.folder(folder)
        paths = studio.roots.keep(image_files(root, limit=2000))  # symlinks out of the roots are dropped
        if not paths:
            raise StudioInputError(f"{folder.strip()}: no image files inside the folders this studio may read")
        model = studio.pool.get(model_name)

        def run(report):
            with torch.no_grad(), studio.pool.shared(model_name):  # no_grad here: grad mode is per thread
                img = embed_image_files(model, paths, batch_size=16, progress=False,
                                        callback=lambda _stage, done, total: report(done, total))
                return img, model.encode_text([text]).float().cpu()

        # Progress while the folder is embedded (2,000 images take minutes on a CPU); a closed page stops it.
        embedded = yield from counted(run, threading.Event(), "embedding the folder", "images",
                                      shape=lambda line: (gr.skip(), line, gr.skip()))
        if embedded is None:
            return
        img, t = embedded
        scores = (img @ t.T)[:, 0]
        k = max(1, min(int(k), len(paths), 48))
        top = torch.argsort(scores, descending=True, stable=True)[:k].tolist()
        gallery = [(str(paths[i]), f"#{r} {float(scores[i]):.3f}  {paths[i].name}") for r, i in enumerate(top, 1)]
        sheet = results.side_by_side([load_images([paths[i]], 128)[0] for i in top[:8]])
        files = results.save("retrieve", sheet, {"model": model_name or studio.pool.default, "text": text,
                                                 "folder": str(root), "scored": len(paths), "k": k,
                                                 "top": [{"path": str(paths[i]), "cosine": float(scores[i])}
                                                         for i in top]}, text)
        yield gallery, f"{len(paths)} images ranked by cosine with \u201c{text}\u201d", files
    return classify, retrieve


def build(studio: Studio) -> None:
    classify, retrieve = handlers(studio)
    gr.Markdown("**Classify** an image against labels you type (zero-shot: no training), or **retrieve** the "
                "images of a folder that best match a text.")
    model = model_choice(studio)
    gr.Markdown("### Classify an image")
    with gr.Row():
        with gr.Column(scale=1):
            image = upload_image("Image", "classify-image")
            labels = gr.Textbox(label="Labels (one per line or comma-separated)", lines=3,
                                value="sunset, forest, city, 大海, 汽车", elem_id="classify-labels")
            template = gr.Textbox(value="{}", label="Prompt template", info="{} is replaced by each label")
            go = gr.Button("Classify", variant="primary", elem_id="classify-run")
            photos = example_photos()
            if photos:
                # Each photo with labels that include its subject: the mountain with 山/森林, the sunset with sunset/大海.
                by_name = {Path(p).stem: p for p in photos}
                pairs = [[by_name.get("mountain_forest", photos[0]), "山, 森林, 城市, 海滩"],
                         [by_name.get("sunset", photos[-1]), "sunset, forest, city, 大海, 汽车"]]
                gr.Examples(pairs, [image, labels], label="Examples")
        with gr.Column(scale=1):
            scores = gr.Label(label="Labels, most likely first", num_top_classes=10, elem_id="classify-scores")
            files = gr.File(label="Download: chart PNG + scores (JSON)", file_count="multiple", interactive=False)
    go.click(classify, [image, labels, template, model], [scores, files], api_name="classify")
    gr.Markdown("### Retrieve images from a folder")
    with gr.Row():
        with gr.Column(scale=1):
            text = gr.Textbox(label="Text", placeholder="e.g. 夕阳下的大海 or a snowy mountain", elem_id="retrieve-text")
            folder = gr.Textbox(label="Folder of images on this machine", placeholder="/path/to/photos",
                                value=str(EXAMPLE_DIR) if EXAMPLE_DIR.is_dir() else "")
            k = gr.Slider(1, 48, value=8, step=1, label="How many")
            find = gr.Button("Retrieve images", variant="primary", elem_id="retrieve-run")
        with gr.Column(scale=2):
            gallery = gr.Gallery(label="Best matches (cosine)", columns=4, height="auto", object_fit="contain")
            status = gr.Markdown(elem_id="retrieve-status")
            found = gr.File(label="Download: contact sheet PNG + ranking (JSON)", file_count="multiple",
                            interactive=False)
    find.click(retrieve, [text, folder, k, model], [gallery, status, found], api_name="retrieve")

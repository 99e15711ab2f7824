"""What every tab shares: the model pool, the stop flags, the page's defaults, and the render controls."""
import json
import threading
from dataclasses import dataclass, field

import gradio as gr

from brivl.viz.vqgan import VQGANError, load_vqgan

from .errors import StudioInputError, check_image_file
from .models import ModelPool
from .paths import EXAMPLE_DIR, Roots
from .stream import StopFlags

EXAMPLES_EN = ["mountains with forests", "a red apple on a table", "Every cloud has a silver lining.",
               "a cyberpunk-styled city at night"]
EXAMPLES_ZH = ["夕阳下的大海", "雪山下的森林", "城市的夜景", "一只在草地上奔跑的狗"]


def example_photos() -> list[str]:
    return [str(p) for p in sorted(EXAMPLE_DIR.glob("*.png"))] if EXAMPLE_DIR.is_dir() else []


@dataclass
class Studio:
    """The studio's shared state. `steps` and `size` are the defaults shown in the page."""

    pool: ModelPool
    roots: Roots = field(default_factory=Roots)  # the folders a page user may name (brivl studio --allow-dir)
    steps: int = 64
    size: int = 128
    vqgan: str = "lite"
    stops: StopFlags = field(default_factory=StopFlags)
    _vqgans: dict = field(default_factory=dict)
    _vqgan_lock: threading.Lock = field(default_factory=threading.Lock)
    vqgan_render_lock: threading.Lock = field(default_factory=threading.Lock)

    def session(self, request: gr.Request | None) -> str:
        return getattr(request, "session_hash", None) or "local"

    def get_vqgan(self, name: str):
        """A VQGAN by name ('lite' = the embedded one, a folder, or a taming .ckpt), loaded once."""
        name = (name or self.vqgan).strip()
        if name not in ("lite", self.vqgan):  # the operator's choices; anything else is a path in the roots
            path = self.roots.check(name, "VQGAN")
            if path.suffix == ".ckpt":  # its .yaml is read too
                self.roots.check(str(path.with_suffix(".yaml")), "VQGAN config")
        with self._vqgan_lock:
            if name not in self._vqgans:
                try:
                    self._vqgans[name] = load_vqgan(name, device=self.pool.device)
                except (VQGANError, FileNotFoundError, ValueError) as e:
                    raise StudioInputError(f"VQGAN {name!r} cannot be loaded: {e}") from None
            return self._vqgans[name]


def text_examples(box: gr.Textbox, samples: list[str], label: str = "Examples", elem_id: str | None = None
                  ) -> gr.Dataset:
    """Example texts that fill `box` in the browser itself: a click sets the box at once, so a Run pressed right
    after it sends the example (gr.Examples asks the server first, and a quick Run could still send the old text)."""
    dataset = gr.Dataset(components=[box], samples=[[s] for s in samples], label=label, type="index",
                         elem_id=elem_id)
    # The browser holds the clicked sample's index; the texts themselves are written into the function.
    pick = f"(i) => {{ const texts = {json.dumps(list(samples), ensure_ascii=False)}; " \
           f"const k = Array.isArray(i) ? i[0] : i; return typeof k === 'number' ? texts[k] : k; }}"
    dataset.click(None, dataset, box, js=pick, queue=False, api_name=False)
    return dataset


def model_choice(studio: Studio, label: str = "Model") -> gr.Dropdown:
    """A model picker: the studio's models, or type a model folder's path."""
    return gr.Dropdown(studio.pool.names, value=studio.pool.default, label=label, allow_custom_value=True,
                       info="brivl-lite is the embedded default; type the path of a local model folder to use it")


def render_controls(studio: Studio, params: tuple[str, ...] = ("fft", "pixel"), lr: float = 0.05):
    """Steps, size, seed, parameterisation, decorrelation and learning rate, in a row."""
    with gr.Row():
        steps = gr.Slider(1, 1024, value=studio.steps, step=1, label="Steps", info="more steps, a clearer image")
        size = gr.Slider(32, 512, value=studio.size, step=8, label="Size (px)")
        seed = gr.Number(value=0, precision=0, minimum=0, label="Seed", info="same seed, same image")
    with gr.Row():
        param = gr.Radio(list(params), value=params[0], label="Parameterisation",
                         info={"fft": "fft: Fourier spectrum (smooth); pixel: raw pixels",
                               "z": "z: latent codes; logits: a distribution over codes"}[params[0]])
        decorrelate = gr.Checkbox(value=True, label="Decorrelated colour", visible=params[0] == "fft")
        lr_box = gr.Number(value=lr, minimum=0.0001, maximum=10, label="Learning rate")
    return steps, size, seed, param, decorrelate, lr_box


def run_stop_buttons(run_label: str = "Run"):
    with gr.Row():
        run = gr.Button(run_label, variant="primary", elem_classes=["run-button"])
        stop = gr.Button("Stop", variant="stop", elem_classes=["stop-button"])
    return run, stop


def wire_stop(studio: Studio, stop: gr.Button, event, api_name: str):
    """Stop: set the session's stop flags (the render ends at its next step) and cancel the event."""
    def stop_renders(request: gr.Request):
        n = studio.stops.stop(studio.session(request))
        if n:
            gr.Info("Stopping: the last preview stays in the page.")

    stop.click(stop_renders, None, None, cancels=[event], api_name=api_name, queue=False)


def upload_image(label: str, elem_id: str) -> gr.Image:
    """An image upload whose file is handed over as it is, so the handler's own check (`errors.check_image_file`)
    says what is wrong in words, instead of a preprocessing trace. (The instance's preprocess is replaced: a gr.Image
    subclass would make Gradio write a .pyi file beside this module.)"""
    image = gr.Image(label=label, type="filepath", sources=["upload", "clipboard"], height=300, elem_id=elem_id)

    def preprocess(payload):
        # The uploaded file's path, as it is: Gradio's own preprocess opens the file with PIL and leaves it open (a
        # ResourceWarning per upload), and the handler reads and checks the image itself.
        return getattr(payload, "path", None) if payload is not None else None

    image.preprocess = preprocess

    def vet(path):
        # Checked as it arrives: a file the browser cannot show would otherwise sit there as a broken picture.
        try:
            check_image_file(path)
        except StudioInputError as e:
            gr.Warning(str(e), duration=None)
            return None
        return gr.skip()

    image.upload(vet, image, image, show_progress="hidden")  # queued: gr.Warning reaches the page only so
    return image


def result_image(label: str, height: int = 400, elem_id: str | None = None, show_label: bool = True) -> gr.Image:
    """An output image, shown as PNG (lossless) and scaled to the box, small renders included."""
    return gr.Image(label=label, format="png", interactive=False, elem_classes=["result-image"], height=height,
                    elem_id=elem_id, show_label=show_label)

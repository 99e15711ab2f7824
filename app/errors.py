"""Input checks for the studio, and one decorator that turns any failure into a readable message in the page.

Every handler is wrapped in `readable`: a bad prompt, upload, folder or model path raises a known error, which
becomes a `gr.Error` (a message box in the page) and one line in the server's log; the server logs unexpected
failures with their traceback and keeps serving.
"""
import functools
import inspect
import logging
from pathlib import Path

import gradio as gr
from PIL import Image, UnidentifiedImageError

from brivl.errors import BrivlError, UserInputError
from brivl.images import load_image
from brivl.inputs import InputError
from brivl.viz.settings import STUDIO_LIMITS, RenderSettings

log = logging.getLogger("brivl.studio")

MAX_SIDE = int(STUDIO_LIMITS["size"][1])  # pixels of a rendered image: beyond it a CPU render takes minutes a step
MAX_STEPS = int(STUDIO_LIMITS["steps"][1])  # the page's slider goes to 1024
MAX_UPLOAD_BYTES = 40 * 2**20
MAX_UPLOAD_PIXELS = 40_000_000  # about 7000 x 5700; larger images are refused before they are decoded
MAX_PROMPT_CHARS = 500


class StudioInputError(UserInputError):
    """Input the studio cannot use; the message says what is wrong and what to do."""


class Stopped(Exception):
    """The user pressed Stop: the render ends at its next step."""


def check_prompt(text: str | None, what: str = "the prompt") -> str:
    """The prompt, stripped; refuses empty, blank and overly long texts."""
    text = (text or "").strip()
    if not text:
        raise StudioInputError(f"{what} is empty: type a few words, in Chinese or English (e.g. 夕阳下的大海, "
                               f"'mountains with forests')")
    if len(text) > MAX_PROMPT_CHARS:
        raise StudioInputError(f"{what} is {len(text)} characters long; keep it under {MAX_PROMPT_CHARS}")
    return text


def check_render(steps, size, seed, lr=0.05) -> tuple[int, int, int, float]:
    """steps, size, seed and lr as numbers within the studio's limits (viz.settings.STUDIO_LIMITS)."""
    s = RenderSettings.checked(STUDIO_LIMITS, error=StudioInputError, steps=steps, size=size, seed=seed, lr=lr)
    return s.steps, s.size, s.seed, s.lr


def check_image_file(path) -> "torch.Tensor":  # noqa: F821 - torch imported lazily
    """An uploaded image as [3, H, W] in [0, 1]; refuses no upload, non-images, damaged and huge images."""
    if not path:
        raise StudioInputError("no image: upload a picture (PNG, JPEG, WebP, ...) first")
    path = Path(path)
    if not path.is_file():
        raise StudioInputError(f"{path.name}: the upload is gone; upload it again")
    size = path.stat().st_size
    if size > MAX_UPLOAD_BYTES:
        raise StudioInputError(f"{path.name}: the file is {size / 2**20:.0f} MB; upload an image under "
                               f"{MAX_UPLOAD_BYTES // 2**20} MB")

    try:
        with Image.open(path) as im:  # reads the header only: the size is known before any pixel is decoded
            w, h = im.size
    except UnidentifiedImageError:
        raise StudioInputError(f"{path.name}: not an image file; upload a PNG, JPEG, WebP, BMP or GIF") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise StudioInputError(f"{path.name}: cannot read this image ({e})") from None
    if w * h > MAX_UPLOAD_PIXELS:
        raise StudioInputError(f"{path.name}: the image is {w} x {h} pixels ({w * h / 1e6:.0f} megapixels); "
                               f"upload one under {MAX_UPLOAD_PIXELS / 1e6:.0f} megapixels")

    try:
        return load_image(path)
    except InputError as e:
        raise StudioInputError(str(e).replace(str(path), path.name)) from None


def check_labels(text: str | None) -> list[str]:
    """Class labels from one per line or comma-separated text; at least two, no repeats."""
    raw = (text or "").replace("\uff0c", ",").replace("\n", ",").split(",")
    labels = list(dict.fromkeys(t.strip() for t in raw if t.strip()))
    if len(labels) < 2:
        raise StudioInputError("give at least two labels, one per line or separated by commas (e.g. cat, dog, 汽车)")
    if len(labels) > 200:
        raise StudioInputError(f"{len(labels)} labels: give at most 200")
    return labels


def _message(e: BaseException) -> str:
    text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    return text or type(e).__name__


def readable(fn):
    """Wrap a handler (function or generator) so every failure shows as a gr.Error message in the page."""
    def convert(e: BaseException) -> gr.Error:
        if isinstance(e, BrivlError):  # the one error family: its message; anything else is a bug, logged
            # One line in the server's log, no traceback (print_exception=False stops Gradio's queue printing one):
            # a user's typo is not a crash.
            log.info("%s: %s", fn.__name__, _message(e))
            return gr.Error(_message(e), duration=None, print_exception=False)
        log.exception("studio handler %s failed", fn.__name__)
        return gr.Error(f"something went wrong ({type(e).__name__}: {_message(e)}); the studio is still running, "
                        f"try other settings", duration=None)

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except (gr.Error, Stopped, GeneratorExit):
                raise
            except Exception as e:  # noqa: BLE001 - shown to the user, logged when unexpected
                raise convert(e) from e
        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as e:  # noqa: BLE001
            raise convert(e) from e
    return wrapper

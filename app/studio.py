"""The Imagine studio: builds the Blocks page from the tab modules and launches it on 127.0.0.1."""
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # nothing leaves the machine

import gradio as gr  # noqa: E402

from .context import EXAMPLE_DIR, Studio  # noqa: E402
from .models import ModelPool  # noqa: E402
from .paths import Roots  # noqa: E402
from .quiet import log_to_stderr, quiet_warnings  # noqa: E402
from .tabs import classify, compare, imagine, neurons, patches, phrases, vqgan  # noqa: E402

TABS = [("Imagine", imagine), ("VQGAN", vqgan), ("Neurons", neurons), ("Phrases", phrases),
        ("Classify & retrieve", classify), ("Patches", patches), ("Compare", compare)]

# System fonts only: the default themes name web fonts, which an offline page cannot fetch.
THEME = gr.themes.Base(primary_hue="indigo", font=["ui-sans-serif", "system-ui", "Noto Sans CJK SC", "sans-serif"],
                       font_mono=["ui-monospace", "monospace"])

CSS = """
.run-button {min-width: 8em}
.result-image img {width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated}
footer {display: none !important}
"""


def build_studio(models: list[str] | None = None, *, device: str = "cpu", steps: int = 64, size: int = 128,
                 vqgan: str = "lite", preload: bool = True, allow_dirs: list[str] | None = None) -> gr.Blocks:
    """The studio's Blocks (not launched). models: names offered in the page, the first is the default;
    allow_dirs: the folders page users may name (default: the working directory, examples/, brivl's cache)."""
    roots = Roots(allow_dirs)
    pool = ModelPool(models or ["brivl-lite"], device=device, roots=roots)
    if preload:
        pool.get(pool.default)  # a missing default model fails here, before the page is served
    studio = Studio(pool, roots=roots, steps=steps, size=size, vqgan=vqgan)
    with gr.Blocks(title="BriVL Imagine studio", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown(f"# BriVL Imagine studio\nSee inside the two-tower vision-language model "
                    f"**{pool.default}**: what it imagines for a text, what its neurons respond to, which phrases "
                    f"and image patches it matches. Everything runs on this machine; nothing is downloaded.")
        for title, module in TABS:
            with gr.Tab(title, id=module.__name__.rsplit(".", 1)[-1]):
                module.build(studio)
    demo.studio = studio
    return demo


def launch(models: list[str] | None = None, *, port: int = 7860, host: str = "127.0.0.1", device: str = "cpu",
           steps: int = 64, size: int = 128, vqgan: str = "lite", concurrency: int = 8, open_browser: bool = False,
           block: bool = True, allow_dirs: list[str] | None = None):
    """Build and serve the studio on host:port (127.0.0.1 by default); `concurrency` requests run at once."""
    quiet_warnings()
    log_to_stderr()
    demo = build_studio(models, device=device, steps=steps, size=size, vqgan=vqgan, allow_dirs=allow_dirs)
    demo.queue(default_concurrency_limit=concurrency, max_size=256)
    demo.launch(server_name=host, server_port=port, share=False, inbrowser=open_browser,
                prevent_thread_lock=not block, show_error=True, max_file_size="40mb", quiet=not block,
                footer_links=["api"], css=CSS, theme=THEME, ssr_mode=False, mcp_server=False,
                allowed_paths=[str(EXAMPLE_DIR)] if EXAMPLE_DIR.is_dir() else None)
    return demo

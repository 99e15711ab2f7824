"""viz's subcommands of `brivl`: imagine, neuron, figures (fig2, fig3, fig5c, all), phrases and compare.

The parser alone, without torch; each command runs a function of viz.commands, imported only then.
"""
from __future__ import annotations

import argparse

from brivl.cli import model_arguments, runs

from .settings import FIGURES

COMMANDS = f"{__package__}.commands"  # where this floor's command functions live
# The [viz] extra's modules: without them this floor adds no commands (a core install), checked without importing.
REQUIRES = ("kornia", "matplotlib", "umap", "jieba")


def _render_args(p: argparse.ArgumentParser, vqgan: bool = False) -> None:
    also = "; with --vqgan {}" if vqgan else ""
    # 128 steps at 160 px: the best picture per second on a CPU (viz.network.IMAGINE_STEPS / IMAGINE_SIZE say why).
    p.add_argument("--steps", type=int, default=128, help=f"optimisation steps (default 128{also.format(100)})")
    p.add_argument("--size", type=int,
                   help=f"image side in pixels (default: 160, or the model's input size when smaller"
                        f"{also.format(256)})")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial noise and the transforms (default 0)")
    p.add_argument("--param", choices=["fft", "pixel"], default="fft",
                   help="image parameterisation: Fourier spectrum or plain pixels (default fft)")
    p.add_argument("--no-decorrelate", dest="decorrelate", action="store_false",
                   help="optimise RGB directly instead of decorrelated colour axes")
    p.add_argument("--lr", type=float, default=0.05,
                   help=f"Adam learning rate (default 0.05{also.format('0.1 for z tokens, 0.5 for logits')})")


def _vqgan_args(p: argparse.ArgumentParser, figure: bool = False) -> None:
    """Options of VQGAN inversion; on `imagine` they apply only with --vqgan."""
    p.add_argument("--vqgan", default="lite" if figure else None,
                   help="VQGAN inversion with this VQGAN: 'lite' (the embedded one), a folder from build-vqgan, or a "
                        "taming .ckpt with its .yaml beside it" + (" (default: lite)" if figure else ""))
    p.add_argument("--vqgan-yaml", help="the taming .yaml, when it does not sit beside the .ckpt")
    if not figure:
        p.add_argument("--negative", action="append", default=[], help="a prompt to move away from (repeatable); "
                       "the text itself may join prompts with ' | ' and weigh them with ':w', e.g. 'sea:1 | fire:0.5'")
        p.add_argument("--init-image", help="start from this image instead of random tokens")
    p.add_argument("--cutn", type=int, default=8, help="random cutouts per step (default 8)")
    p.add_argument("--cut-pow", type=float, default=1.0, help="cutout size power; >1 favours small cutouts (default 1)")
    p.add_argument("--tokens", choices=["z", "logits"], default="z",
                   help="token parameterisation: straight-through z, or code logits with a straight-through Gumbel "
                        "sampler (default z; lr defaults to 0.1 for z, 0.5 for logits)")
    p.set_defaults(steps=None, lr=None)  # resolved per method: VQGAN inversion wants fewer steps and a larger lr


def _phrase_source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--phrases", default="jieba", help="'jieba' (its dictionary, 349,045 phrases; the default) or a "
                                                      "text file with one phrase per line")
    p.add_argument("--limit", type=int, help="use only the first N phrases (for jieba: the N most frequent)")
    p.add_argument("--index", help="the index folder (default: a folder named by the model and phrase fingerprints "
                                   "under $BRIVL_CACHE/phrase-index; for fig5c, the folder to put those in)")
    p.add_argument("--batch-size", type=int, default=256, help="phrases per forward pass (default 256)")



def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help="two models side by side: the same texts, seed and settings")
    what = p.add_subparsers(dest="what", required=True, metavar="WHAT")
    f = what.add_parser("imagine", help="network visualisation of each text by both models, one grid, each render "
                                        "scored under both models (PNG + JSON)")
    f.add_argument("models", nargs=2, metavar="MODEL", help="the two models: presets, folders, openclip:..., hf:...")
    f.add_argument("texts", nargs="+", metavar="TEXT", help="the texts to imagine")
    f.add_argument("--tokenizer", help="tokenizer folder or vocab.txt, for BriVL models saved without one")
    f.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    f.add_argument("-o", "--output", default="compare.png", help="the grid PNG; the scores go to a .json beside it "
                                                                  "(default: compare.png)")
    _render_args(f)
    runs(f, COMMANDS, "cmd_compare")


def _add_imagine(sub) -> None:
    p = sub.add_parser("imagine", help="network visualisation (or, with --vqgan, VQGAN inversion): an image the "
                                       "model matches to a text (PNG + JSON)")
    model_arguments(p)
    p.add_argument("text", nargs="?", help="the text to imagine (given alone, the model is brivl-lite)")
    p.add_argument("-o", "--output", default="imagine.png", help="the PNG to write; its settings go to a .json "
                                                                  "beside it (default: imagine.png)")
    _render_args(p, vqgan=True)
    _vqgan_args(p)
    runs(p, COMMANDS, "cmd_imagine")


def _add_neuron(sub) -> None:
    p = sub.add_parser("neuron", help="neuron visualisation: maximise one channel of a layer, under an optional text")
    model_arguments(p)
    p.add_argument("--layer", default="llp", help="a feature layer of the model (default: llp, the CNN's last layer "
                                                  "before pooling; `brivl info` lists them)")
    p.add_argument("--channel", type=int, required=True, help="the channel to maximise (e.g. 108 for LLP-108)")
    p.add_argument("--text", help="a semantic constraint: the image must also match this text (default: none)")
    p.add_argument("--text-weight", type=float, default=1.0, help="weight of the text match (default 1)")
    p.add_argument("-o", "--output", default="neuron.png", help="the PNG to write; its settings go to a .json "
                                                                 "beside it (default: neuron.png)")
    _render_args(p)
    runs(p, COMMANDS, "cmd_neuron")


def _add_figures(sub) -> None:
    p = sub.add_parser("figures", help="regenerate the paper's figures: one (fig2, fig3, fig5c) or all of them")
    runs(p, COMMANDS, "cmd_figures")
    figures = p.add_subparsers(dest="figure", required=False, metavar="FIGURE")
    _add_fig2(figures)
    _add_fig3(figures)
    _add_fig5c(figures)
    _add_figures_all(figures)


def _add_fig2(figures) -> None:
    f = figures.add_parser("fig2", help="Fig. 2: network visualisation (concepts, sentences, 'mountains with'), "
                                        "neurons LLP-108/456/678 under 'forest' and 'mountains'")
    f.add_argument("--model", default="brivl-lite", help="the model (default: brivl-lite)")
    f.add_argument("--tokenizer", help="tokenizer folder or vocab.txt, for models saved without one")
    f.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    f.add_argument("--out", required=True, help="folder for fig2.png, fig2.json and cells/")
    f.add_argument("--channels", type=int, nargs="+", default=[108, 456, 678],
                   help="LLP channels of panel d (default: the paper's 108 456 678)")
    f.add_argument("--text-weight", type=float, default=1.0, help="weight of the text match in panel d (default 1)")
    _render_args(f)
    runs(f, COMMANDS, "cmd_fig2")


def _add_fig3(figures) -> None:
    f = figures.add_parser("fig3", help="Fig. 3: text-to-image by VQGAN inversion (scenes, a coherent story, unreal "
                                        "scenes), beside a CLIP-style model when one is given")
    f.add_argument("--model", default="brivl-lite", help="the model (default: brivl-lite)")
    f.add_argument("--compare", default="none", help="a CLIP-style model for panel a: openclip:ARCH:PATH, "
                                                     "hf:FOLDER (CLIP, Chinese-CLIP, AltCLIP, SigLIP) or any model "
                                                     "(default: none, panel a is left out)")
    f.add_argument("--tokenizer", help="tokenizer folder or vocab.txt, for models saved without one")
    f.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    f.add_argument("--out", required=True, help="folder for fig3.png, fig3.json and cells/")
    f.add_argument("--prompts", help="a JSON file {panel: [texts]} replacing the default texts of panels a-d")
    f.add_argument("--steps", type=int, default=100, help="optimisation steps per image (default 100)")
    f.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    f.add_argument("--seed", type=int, default=0, help="seed of the tokens, cutouts and augmentations (default 0)")
    f.add_argument("--lr", type=float, default=None, help="Adam learning rate (default 0.1 for z, 0.5 for logits)")
    _vqgan_args(f, figure=True)
    runs(f, COMMANDS, "cmd_fig3")


def _add_fig5c(figures) -> None:
    f = figures.add_parser("fig5c", help="Fig. 5c: top-30 phrase retrieval of 'sports' and 'automobile' (运动, 汽车) "
                                         "over jieba's phrases, UMAP maps of two models side by side")
    f.add_argument("--model", default="brivl-lite", help="the model (default: brivl-lite)")
    f.add_argument("--compare", default="backbone",
                   help="the model beside it: 'backbone' (its own text backbone alone, mean-pooled: the paper's "
                        "RoBERTa-large vs BriVL w/ RoBERTa-large; the default), 'none', or another model")
    f.add_argument("--tokenizer", help="tokenizer folder or vocab.txt, for models saved without one")
    f.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    f.add_argument("--out", required=True, help="folder for fig5c.png and fig5c.json")
    f.add_argument("--queries", nargs="+", default=None, help="query texts (default: 运动 汽车)")
    _phrase_source_args(f)
    f.add_argument("-k", type=int, default=30, help="phrases per query (default 30)")
    f.add_argument("--seed", type=int, default=0, help="UMAP random_state (default 0)")
    f.add_argument("--layout", choices=["umap", "pca"], default="umap", help="2-D layout (default umap)")
    runs(f, COMMANDS, "cmd_fig5c")


def _add_figures_all(figures) -> None:
    f = figures.add_parser("all", help="every figure the toolkit covers (2a-d, 3, 4c, 5c, the S2a-style table), "
                                       "each in its own folder, plus index.html")
    f.add_argument("--out", help="the folder for every figure and index.html")
    f.add_argument("--model", default="brivl-lite", help="the model (default brivl-lite)")
    f.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    f.add_argument("--steps", type=int, default=256, help="render steps (default 256)")
    f.add_argument("--size", type=int, help="image side (default: the model's input)")
    f.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    f.add_argument("--phrase-limit", type=int, help="use only jieba's N most frequent phrases for Fig. 5c (default: all)")
    f.add_argument("--only", nargs="+", metavar="FIGURE", help=f"just these ({' '.join(FIGURES)})")
    runs(f, COMMANDS, "cmd_figures_all")


def _add_phrases(sub) -> None:
    p = sub.add_parser("phrases", help="phrase retrieval: embed a phrase list once (jieba's by default), query it")
    phrases = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    f = phrases.add_parser("build", help="embed a phrase list into an index folder (resumes an interrupted build; "
                                         "rebuilds a stale one)")
    model_arguments(f)
    _phrase_source_args(f)
    f.add_argument("--backbone", action="store_true", help="index with the model's text backbone alone (mean-pooled)")
    f = phrases.add_parser("query", help="top-k phrases of one or more queries (cosine); optionally a UMAP plot")
    model_arguments(f)
    f.add_argument("queries", nargs="+", help="query texts")
    _phrase_source_args(f)
    f.add_argument("--backbone", action="store_true", help="query the model's text backbone alone (its own index)")
    f.add_argument("-k", type=int, default=30, help="phrases per query (default 30)")
    f.add_argument("--json", action="store_true", help="print JSON instead of a table")
    f.add_argument("--plot", help="also draw the queries and their top-k phrases in 2-D (a PNG path; JSON beside it)")
    f.add_argument("--layout", choices=["umap", "pca"], default="umap", help="2-D layout of --plot (default umap)")
    f.add_argument("--seed", type=int, default=0, help="UMAP random_state of --plot (default 0)")
    runs(p, COMMANDS, "cmd_phrases")


def register(sub) -> None:
    """Add this floor's subcommands to the `brivl` command's subparsers."""
    _add_imagine(sub)
    _add_neuron(sub)
    _add_figures(sub)
    _add_phrases(sub)
    _add_compare(sub)

"""The `brivl` command: one subcommand per job."""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from .errors import BrivlError

EXIT_BAD_INPUT = 2


def _model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a preset (tiny), a folder from save_pretrained/convert, or a weights file")
    p.add_argument("--tokenizer", help="tokenizer folder or vocab.txt, for models saved without one")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")


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
    p.add_argument("--limit", type=int, help="use only the first N phrases")
    p.add_argument("--index", help="the index folder (default: a folder named by the model and phrase fingerprints "
                                   "under $BRIVL_CACHE/phrase-index; for fig5c, the folder to put those in)")
    p.add_argument("--batch-size", type=int, default=256, help="phrases per forward pass (default 256)")


def _eval_common(p: argparse.ArgumentParser, batch: int, templates: bool = True) -> None:
    if templates:
        p.add_argument("--template", action="append", dest="templates",
                       help="prompt template with {} for the class name; repeat to average several (default: the "
                            "class name alone, as in the paper)")
    p.add_argument("--name", help="the method name in the table (default: the model argument)")
    p.add_argument("--batch-size", type=int, default=batch, help=f"batch size (default {batch})")
    p.add_argument("-o", "--output", help="write the results as JSON here")
    p.add_argument("--markdown", help="write the markdown table here")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `brivl` command."""
    parser = argparse.ArgumentParser(prog="brivl", description="BriVL two-tower vision-language models, offline.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("info", help="describe a model: layout, sizes, parameter counts")
    _model_arg(p)

    p = sub.add_parser("encode-text", help="embed texts (print them, or save with -o)")
    _model_arg(p)
    p.add_argument("texts", nargs="+", help="texts to embed; '-' reads one text per line from stdin")
    p.add_argument("-o", "--output", help="save embeddings to .npy, .json or .safetensors")

    p = sub.add_parser("encode-image", help="embed image files (print them, or save with -o)")
    _model_arg(p)
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--boxes", help="JSONL of detector boxes in the BriVL-1.0 release's format, one line per image: "
                                   "{\"image_id\": PATH, \"bbox\": [[x1, y1, x2, y2], ...]} in the file's pixels "
                                   "(the first 36 are kept, the whole image is added; default: the 6x6 grid)")
    p.add_argument("-o", "--output", help="save embeddings to .npy, .json or .safetensors")

    p = sub.add_parser("similarity", help="cosine similarity of every image with every text")
    _model_arg(p)
    p.add_argument("--text", "-t", nargs="+", required=True, dest="texts", help="texts")
    p.add_argument("--image", "-i", nargs="+", required=True, dest="images", help="image files")

    p = sub.add_parser("convert", help="convert an official BriVL .pth into a safetensors model folder")
    p.add_argument("checkpoint", help="the official .pth file (loaded with weights_only=True)")
    p.add_argument("out_dir", help="folder to write model.safetensors, config.json and tokenizer files to")
    p.add_argument("--preset", "--release", dest="preset",
                   help="the release the weights come from: brivl-1.0 (BAAI WuDao BriVL-1.0: 380 px, detector boxes; "
                        "the default for a B5 checkpoint) or brivl-nmi (the Nature Communications release: 456 px, "
                        "6x6 grid + whole image); any preset names a layout (default: told by the CNN width)")
    p.add_argument("--tokenizer", help="tokenizer folder or vocab.txt of the text backbone, copied into out_dir")
    p.add_argument("--max-text-len", type=int, help="padded text length (default 80, the releases' config); the "
                                                    "release attends to padding, so match the embeddings you compare "
                                                    "with: the Nature Communications example.py pads to 32")
    p = sub.add_parser("train", help="cross-modal MoCo pre-training on DeepSpeed (see README: Training)")
    p.add_argument("--config", required=True, help="a YAML training config")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in the output folder")
    p.add_argument("--steps", type=int, help="override the number of steps")
    p.add_argument("--local_rank", type=int, help=argparse.SUPPRESS)  # passed by the deepspeed launcher

    p = sub.add_parser("build-default", help="rebuild the brivl-lite heads from installed packages (hours; resumable)")
    p.add_argument("--config", default=None, help="a YAML build config (default: the built-in full recipe)")
    p.add_argument("--work", help="override the work folder")
    p.add_argument("--out", help="override where the heads are written")

    p = sub.add_parser("build-vqgan", help="train the embedded VQGAN (vqgan-lite) on offline images (resumable)")
    p.add_argument("--config", default=None, help="a YAML build config (default: configs/build-vqgan.yaml's "
                                                   "values, built in)")
    p.add_argument("--work", help="override the work folder")
    p.add_argument("--out", help="override where the VQGAN is written")
    p.add_argument("--steps", type=int, help="override the number of steps")

    p = sub.add_parser("imagine", help="network visualisation (or, with --vqgan, VQGAN inversion): an image the "
                                       "model matches to a text (PNG + JSON)")
    _model_arg(p)
    p.add_argument("text", nargs="?", help="the text to imagine (given alone, the model is brivl-lite)")
    p.add_argument("-o", "--output", default="imagine.png", help="the PNG to write; its settings go to a .json "
                                                                  "beside it (default: imagine.png)")
    _render_args(p, vqgan=True)
    _vqgan_args(p)

    p = sub.add_parser("neuron", help="neuron visualisation: maximise one channel of a layer, under an optional text")
    _model_arg(p)
    p.add_argument("--layer", default="llp", help="a feature layer of the model (default: llp, the CNN's last layer "
                                                  "before pooling; `brivl info` lists them)")
    p.add_argument("--channel", type=int, required=True, help="the channel to maximise (e.g. 108 for LLP-108)")
    p.add_argument("--text", help="a semantic constraint: the image must also match this text (default: none)")
    p.add_argument("--text-weight", type=float, default=1.0, help="weight of the text match (default 1)")
    p.add_argument("-o", "--output", default="neuron.png", help="the PNG to write; its settings go to a .json "
                                                                 "beside it (default: neuron.png)")
    _render_args(p)

    p = sub.add_parser("figures", help="regenerate the paper's figures")
    p.add_argument("--all", action="store_true", help="regenerate every figure the toolkit covers (2a-d, 3, 4c, 5c, "
                                                      "the S2a-style table) plus index.html; options below")
    p.add_argument("--out", dest="all_out", help="with --all: the folder for every figure and index.html")
    p.add_argument("--model", dest="all_model", default="brivl-lite", help="with --all: the model (default brivl-lite)")
    p.add_argument("--device", dest="all_device", default="cpu", help="with --all: torch device (default: cpu)")
    p.add_argument("--steps", dest="all_steps", type=int, default=256, help="with --all: render steps (default 256)")
    p.add_argument("--size", dest="all_size", type=int, help="with --all: image side (default: the model's input)")
    p.add_argument("--seed", dest="all_seed", type=int, default=0, help="with --all: seed (default 0)")
    p.add_argument("--phrase-limit", dest="all_phrase_limit", type=int,
                   help="with --all: use only the first N of jieba's phrases for Fig. 5c (default: all)")
    p.add_argument("--only", dest="all_only", nargs="+", help="with --all: just these (fig2 fig3 fig4c fig5c s2a)")
    figures = p.add_subparsers(dest="figure", required=False, metavar="FIGURE")
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

    f = figures.add_parser("fig3", help="Fig. 3: text-to-image by VQGAN inversion (scenes, a coherent story, unreal "
                                        "scenes), beside a CLIP-style model when one is given")
    f.add_argument("--model", default="brivl-lite", help="the model (default: brivl-lite)")
    f.add_argument("--compare", default="none", help="a CLIP-style model for panel a, e.g. openclip:ARCH:PATH "
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

    p = sub.add_parser("studio", help="open the Imagine studio (a Gradio page on 127.0.0.1) on brivl-lite")
    p.add_argument("--model", action="append", dest="models",
                   help="a model to offer (repeat for several; the first is the default; default: brivl-lite, tiny)")
    p.add_argument("--port", type=int, default=7860, help="port on 127.0.0.1 (default 7860)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--steps", type=int, default=64, help="default render steps shown in the page (default 64)")
    p.add_argument("--size", type=int, default=128, help="default image side shown in the page (default 128)")
    p.add_argument("--vqgan", default="lite", help="the VQGAN of the VQGAN tab (default: lite, the embedded one)")
    p.add_argument("--concurrency", type=int, default=8, help="requests served at once (default 8)")
    p.add_argument("--open", action="store_true", help="open the page in a browser")
    p.add_argument("--allow-dir", action="append", dest="allow_dirs", metavar="FOLDER",
                   help="a folder whose images, phrase files, models and VQGANs page users may name (repeat for "
                        "several; default: the working directory, examples/ and the brivl cache)")

    p = sub.add_parser("phrases", help="phrase retrieval: embed a phrase list once (jieba's by default), query it")
    phrases = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    f = phrases.add_parser("build", help="embed a phrase list into an index folder (resumes an interrupted build; "
                                         "rebuilds a stale one)")
    _model_arg(f)
    _phrase_source_args(f)
    f.add_argument("--backbone", action="store_true", help="index with the model's text backbone alone (mean-pooled)")
    f = phrases.add_parser("query", help="top-k phrases of one or more queries (cosine); optionally a UMAP plot")
    _model_arg(f)
    f.add_argument("queries", nargs="+", help="query texts")
    _phrase_source_args(f)
    f.add_argument("--backbone", action="store_true", help="query the model's text backbone alone (its own index)")
    f.add_argument("-k", type=int, default=30, help="phrases per query (default 30)")
    f.add_argument("--json", action="store_true", help="print JSON instead of a table")
    f.add_argument("--plot", help="also draw the queries and their top-k phrases in 2-D (a PNG path; JSON beside it)")
    f.add_argument("--layout", choices=["umap", "pca"], default="umap", help="2-D layout of --plot (default umap)")
    f.add_argument("--seed", type=int, default=0, help="UMAP random_state of --plot (default 0)")

    p = sub.add_parser("eval", help="zero-shot classification (images, texts) and image-text retrieval")
    evals = p.add_subparsers(dest="task", required=True, metavar="TASK")
    f = evals.add_parser("zeroshot", help="zero-shot image classification on class folders, with the paper's "
                                          "unseen/seen splits (mean and std over 25 random splits)")
    _model_arg(f)
    f.add_argument("folder", help="a folder with one sub-folder of images per class (folder name = class name)")
    f.add_argument("--classes", help="class-name mapping: JSON {folder: name} or lines 'folder<TAB>name'")
    f.add_argument("--ratios", nargs="+", help="unseen/seen class ratios, e.g. 21/0 16/5 (default: every class "
                                               "unseen, C/0); U/S = U classes tested, S left out")
    f.add_argument("--splits", type=int, default=25, help="random splits per ratio with seen classes (default 25)")
    f.add_argument("--seed", type=int, default=0, help="seed of the splits (default 0)")
    _eval_common(f, batch=32)
    f = evals.add_parser("textcls", help="zero-shot text classification: each text to the nearest class name")
    _model_arg(f)
    f.add_argument("tsv", help="lines 'text<TAB>label'")
    f.add_argument("--classes", help="label-to-class-name mapping: JSON {label: name} or lines 'label<TAB>name'")
    f.add_argument("--backbone", action="store_true", help="classify with the model's text backbone alone "
                                                           "(the paper's RoBERTa baselines of Fig. 5a)")
    _eval_common(f, batch=128)
    f = evals.add_parser("retrieval", help="image<->text Recall@1/5/10 and Recall@SUM (several captions per image)")
    _model_arg(f)
    f.add_argument("manifest", help="JSONL {image, text|captions} or TSV image<TAB>caption; rows of one image merge")
    _eval_common(f, batch=32, templates=False)

    p = sub.add_parser("make-toy-data", help="write a procedural captioned-shapes data set (for smoke tests)")
    p.add_argument("folder", help="where to write images/ and manifest.jsonl")
    p.add_argument("-n", type=int, default=512, help="number of pairs (default 512)")
    p.add_argument("--size", type=int, default=96, help="image side in pixels (default 96)")
    p.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `brivl` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():  # show warnings as one line each, only while the command runs
        warnings.simplefilter("default")
        warnings.showwarning = _show_warning
        try:
            if args.command in ("encode-text", "encode-image"):
                _check_output_suffix(args.output)
            return COMMANDS[args.command](args)
        except BrivlError as e:  # the one error family: a message; anything else is a bug (a traceback)
            print(f"brivl {args.command}: error: {e}", file=sys.stderr)
            return EXIT_BAD_INPUT


OUTPUT_SUFFIXES = (".npy", ".json", ".safetensors")


def _check_output_suffix(output: str | None) -> None:
    from .inputs import InputError

    if output and Path(output).suffix not in OUTPUT_SUFFIXES:
        raise InputError(f"{output}: unknown output format; use {', '.join(OUTPUT_SUFFIXES)}")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"brivl: warning: {message}", file=sys.stderr)


def _load(args: argparse.Namespace, name: str | None = None):
    from .hub import load

    name = args.model if name is None else name
    if name.startswith("openclip:"):  # hub.load routes it; an OpenCLIP model takes no tokenizer folder
        return load(name, device=args.device)
    return load(name, device=args.device, tokenizer=args.tokenizer)


def _boxes_text(im) -> str:
    """How the image tower picks its boxes, in words."""
    grid = f"{im.box_grid}x{im.box_grid} grid + whole image"
    if im.boxes == "detector":
        return f"up to {im.num_patches - 1} detector boxes (--boxes) + whole image, padded and masked; {grid} if none"
    return grid


def cmd_info(args: argparse.Namespace) -> int:
    """Print a model's layout and sizes."""
    from .official import release_of

    model = _load(args)
    cfg = model.config
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    im, tx = cfg.image, cfg.text
    rows = [
        ("model", cfg.name),
        ("joint dim", cfg.embed_dim),
        ("release", release_of(cfg)),
        ("image tower", f"{im.backbone} @ {im.image_size}px -> {im.num_patches} MSPP patches "
                        f"({_boxes_text(im)}, {im.grid_size}x{im.grid_size} samples) "
                        f"-> {im.att_layers}x SA({im.patch_dim}, {im.att_heads} heads) -> MLP"),
        ("text tower", f"{tx.backbone.get('model_type')} {tx.backbone.get('num_hidden_layers')}x{tx.hidden_size}"
                       f" ({tx.backbone_name or 'custom'}), max {tx.max_len} tokens -> {tx.att_layers}x SA -> MLP"),
        ("text mask", "attention mask on" if tx.use_attention_mask else "no attention mask (as the release)"),
        ("tokenizer", "missing (pass --tokenizer)" if model.tokenizer is None else type(model.tokenizer).__name__),
        ("parameters", f"image {count(model.imgencoder) / 1e6:.2f} M, text {count(model.textencoder) / 1e6:.2f} M"),
        ("feature layers", ", ".join(model.feature_layers())),
        ("MoCo", f"queue {cfg.queue_size}, momentum {cfg.momentum}, temperature {cfg.temperature}"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


def _read_texts(texts: list[str]) -> list[str]:
    from .inputs import InputError

    if texts == ["-"]:
        raw = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputError(f"stdin is not UTF-8 text (byte {raw[e.start]:#04x} at offset {e.start})") from None
        return [line for line in text.splitlines() if line.strip()]
    return texts


def _print_embeddings(labels: list[str], emb) -> None:
    for label, row in zip(labels, emb):
        head = " ".join(f"{v:+.4f}" for v in row[:8].tolist())
        print(f"{label}\t|z|={row.norm():.4f}\t[{head}{' ...' if len(row) > 8 else ''}]")


def _save(path: str, emb, labels: list[str]) -> None:
    import numpy as np

    from .checkpoint import atomic_write_bytes, save_safetensors
    from .inputs import InputError

    out = Path(path)
    array = emb.detach().cpu().float().numpy()
    if out.suffix == ".npy":
        buf = io.BytesIO()
        np.save(buf, array)
        atomic_write_bytes(out, buf.getvalue())
    elif out.suffix == ".json":
        atomic_write_bytes(out, json.dumps({"labels": labels, "embeddings": array.tolist()}).encode())
    elif out.suffix == ".safetensors":
        save_safetensors({"embeddings": emb.detach().cpu().float()}, out, metadata={"labels": json.dumps(labels)})
    else:
        raise InputError(f"{out}: unknown output format; use {', '.join(OUTPUT_SUFFIXES)}")
    print(f"saved {array.shape[0]} x {array.shape[1]} embeddings to {out}", file=sys.stderr)


def cmd_encode_text(args: argparse.Namespace) -> int:
    """Embed texts."""
    import torch

    texts = _read_texts(args.texts)
    model = _load(args)
    with torch.inference_mode():
        emb = model.encode_text(texts)
    labels = [t if len(t) <= 40 else t[:37] + "..." for t in texts]
    _save(args.output, emb, texts) if args.output else _print_embeddings(labels, emb)
    return 0


def _encode_images(model, paths: list[str], boxes_file: str | None = None):
    import inspect

    import torch

    from .boxes import RELEASE_MAX_BOXES, boxes_for, load_images_with_boxes, read_release_jsonl
    from .images import load_images

    from .inputs import InputError

    if boxes_file is not None and "boxes" not in inspect.signature(model.encode_image).parameters:
        raise InputError(f"{type(model).__name__} takes no boxes; leave out --boxes")
    if boxes_file is None:
        pixels, boxes = load_images(paths, model.image_size), None
    else:
        per_image = boxes_for(paths, read_release_jsonl(boxes_file), boxes_file)
        pixels, boxes = load_images_with_boxes(paths, per_image, model.image_size, RELEASE_MAX_BOXES)
    with torch.inference_mode():
        return model.encode_image(pixels) if boxes is None else model.encode_image(pixels, boxes=boxes)


def cmd_encode_image(args: argparse.Namespace) -> int:
    """Embed image files."""
    model = _load(args)
    config = getattr(model, "config", None)
    if args.boxes is None and config is not None and config.image.boxes == "detector":
        warnings.warn(f"{config.name} was trained on detector boxes; without --boxes it sees the "
                      f"{config.image.box_grid}x{config.image.box_grid} grid", stacklevel=1)
    emb = _encode_images(model, args.images, args.boxes)
    _save(args.output, emb, args.images) if args.output else _print_embeddings(args.images, emb)
    return 0


def cmd_similarity(args: argparse.Namespace) -> int:
    """Print the image x text cosine similarity table."""
    import torch

    model = _load(args)
    texts = _read_texts(args.texts)
    images = _encode_images(model, args.images)
    with torch.inference_mode():
        sims = images @ model.encode_text(texts).T
    names = [Path(p).name for p in args.images]
    width = max(len(n) for n in names)
    print(f"cosine similarity ({model.config.name}, {model.embed_dim}-d)")
    # Absolute cosines of a joint space are small and model-specific; the ranking in a row is what zero-shot uses.
    print(" " * width + "".join(f" {f'[{j}]':>6}" for j in range(len(texts))) + "  best")
    for name, row in zip(names, sims):
        print(f"{name:<{width}}" + "".join(f" {v:+.3f}" for v in row.tolist()) + f"  [{int(row.argmax())}]")
    for j, t in enumerate(texts):
        print(f"[{j}] {t}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    """Convert an official checkpoint to a model folder."""
    from .hf import refuse_remote_code
    from .official import load_official

    refuse_remote_code(args.tokenizer)  # official.py reads it through transformers
    model = load_official(args.checkpoint, base=args.preset, tokenizer=args.tokenizer, max_len=args.max_text_len)
    out = model.save_pretrained(args.out_dir)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {out}/ ({model.config.name}, {n / 1e6:.1f} M parameters, joint dim {model.embed_dim})")
    if model.tokenizer is None:
        print("note: no tokenizer was given; encode-text needs --tokenizer, or copy vocab.txt into the folder",
              file=sys.stderr)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Run or resume pre-training."""
    import logging

    from .train import TrainConfig, train

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfg = TrainConfig.load(args.config)
    if args.steps is not None:
        cfg.steps = args.steps
    last = train(cfg, resume=args.resume)
    if last and os.environ.get("RANK", "0") == "0":
        print(json.dumps(last))
    return 0


def cmd_build_default(args: argparse.Namespace) -> int:
    """Run the brivl-lite build recipe (version 2 unless the config says `version: 1`)."""
    import logging

    import yaml

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    data = yaml.safe_load(Path(args.config).read_text()) if args.config else {}
    if isinstance(data, dict) and data.get("version") == 1:
        from recipes.brivl_lite.recipe import BuildConfig, build_default
    else:
        from recipes.brivl_lite.build import LiteBuildConfig as BuildConfig
        from recipes.brivl_lite.build import build_default
    cfg = BuildConfig.load(args.config) if args.config else BuildConfig()
    if args.work:
        cfg.work = args.work
    if args.out:
        cfg.out = args.out
    print(json.dumps(build_default(cfg), ensure_ascii=False))
    return 0


def cmd_build_vqgan(args: argparse.Namespace) -> int:
    """Train, export and measure the embedded VQGAN."""
    import logging

    from recipes.vqgan_lite.build import VQGANBuildConfig, build_vqgan

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfg = VQGANBuildConfig.load(args.config) if args.config else VQGANBuildConfig()
    for key in ("work", "out", "steps"):
        if getattr(args, key) is not None:
            setattr(cfg, key, getattr(args, key))
    print(json.dumps(build_vqgan(cfg, progress=sys.stderr.isatty())))
    return 0


def cmd_make_toy_data(args: argparse.Namespace) -> int:
    """Write the toy captioned-shapes data set."""
    from .toydata import make_toy_pairs

    print(make_toy_pairs(args.folder, args.n, size=args.size, seed=args.seed))
    return 0


# --- visualisation (viz is imported here, never at module level: brivl's core does not depend on viz) -----------

def _check_render_args(args: argparse.Namespace) -> None:
    """Refuse settings the render loop cannot use, before any model is loaded."""
    from .inputs import InputError

    if args.steps < 1:
        raise InputError(f"--steps must be at least 1, got {args.steps}")
    if args.size is not None and not 16 <= args.size <= 4096:
        raise InputError(f"--size must be between 16 and 4096 pixels, got {args.size}")
    if not args.lr > 0:
        raise InputError(f"--lr must be > 0, got {args.lr}")
    output = getattr(args, "output", None)
    if output is not None and Path(output).suffix.lower() != ".png":
        raise InputError(f"{output}: the image is written as PNG; give a path ending in .png")


def _render_settings(args: argparse.Namespace) -> dict:
    return {"steps": args.steps, "size": args.size, "seed": args.seed, "param": args.param,
            "decorrelate": args.decorrelate, "lr": args.lr}


def _write_render(args: argparse.Namespace, model, result, settings: dict, seconds: float) -> None:
    """Write the image as a PNG at args.output and every setting to a JSON beside it."""
    import torch

    from viz.figures import save_png, write_json

    out = Path(args.output)
    save_png(result.images[0], out)
    side = int(result.images.shape[-1])
    info = {"command": args.command, "model": args.model, "model_name": model.config.name, **settings,
            "size": side, "transforms": "standard", "final_objective": result.history[-1, 0].item(),
            "time_s": round(seconds, 3), "device": args.device, "torch": torch.__version__, "image": out.name}
    meta = write_json(info, out.with_suffix(".json"))
    print(f"wrote {out} ({side}x{side}) and {meta}")


def _check_text(text: str | None, what: str) -> None:
    from .inputs import InputError

    if text is not None and not text.strip():
        raise InputError(f"{what} is empty or only whitespace; give it some words")


def _vqgan_defaults(args: argparse.Namespace) -> None:
    """Fill --steps/--size/--lr left unset: VQGAN inversion's own defaults, else network visualisation's."""
    vq = getattr(args, "vqgan", None) is not None
    if args.steps is None:
        args.steps = 100 if vq else 128
    if args.lr is None:
        args.lr = (0.1 if args.tokens == "z" else 0.5) if vq else 0.05
    if vq and args.size is None:
        args.size = 256


def _vqgan_prompts(args: argparse.Namespace) -> list[tuple[str, float]]:
    from viz.vqgan_imagine import parse_prompt, prompts

    from .inputs import InputError

    try:
        return prompts([parse_prompt(t) for t in args.text.split(" | ")], args.negative)
    except ValueError as e:
        raise InputError(str(e)) from None


def _load_vqgan(args: argparse.Namespace):
    from viz.vqgan import load_vqgan

    return load_vqgan(args.vqgan, args.vqgan_yaml, device=args.device)


def _imagine_vqgan(args: argparse.Namespace) -> int:
    """VQGAN inversion of one (weighted, multi-part) text."""
    import time

    import torch

    from viz.figures import save_png, write_json
    from viz.vqgan_imagine import vqgan_imagine

    from .inputs import InputError

    if args.cutn < 1 or not args.cut_pow > 0:
        raise InputError(f"--cutn must be >= 1 and --cut-pow > 0, got {args.cutn}, {args.cut_pow}")
    pairs = _vqgan_prompts(args)
    model, vqgan = _load(args), _load_vqgan(args)
    init = None
    if args.init_image:
        from .images import load_image

        init = load_image(args.init_image)
    t0 = time.perf_counter()
    try:
        result = vqgan_imagine(model, vqgan, pairs, steps=args.steps, size=args.size, lr=args.lr, seed=args.seed,
                               param=args.tokens, cutn=args.cutn, cut_pow=args.cut_pow, init=init)
    except ValueError as e:
        raise InputError(str(e)) from None
    seconds = time.perf_counter() - t0
    out = Path(args.output)
    save_png(result.images[0], out)
    h, w = result.images.shape[-2:]
    info = {"command": "imagine", "method": "vqgan-inversion", "model": args.model, "model_name": model.config.name,
            "vqgan": str(args.vqgan), "vqgan_name": vqgan.config.name, "prompts": pairs, "steps": args.steps,
            "size": [int(h), int(w)], "seed": args.seed, "lr": args.lr, "tokens": args.tokens, "cutn": args.cutn,
            "cut_pow": args.cut_pow, "init_image": args.init_image, "final_cosine": result.history[-1, 0].item(),
            "first_cosine": result.history[0, 0].item(), "time_s": round(seconds, 3), "device": args.device,
            "torch": torch.__version__, "image": out.name}
    meta = write_json(info, out.with_suffix(".json"))
    print(f"wrote {out} ({w}x{h}) and {meta}")
    return 0


def cmd_imagine(args: argparse.Namespace) -> int:
    """Network visualisation of one text, or VQGAN inversion with --vqgan."""
    import time

    import viz

    if args.text is None:  # `brivl imagine "a text"`: the one positional is the text
        args.model, args.text = "brivl-lite", args.model
    _check_text(args.text, "the text")
    _vqgan_defaults(args)
    _check_render_args(args)
    if args.vqgan is not None:
        return _imagine_vqgan(args)
    model = _load(args)
    settings = {"text": args.text, **_render_settings(args)}
    t0 = time.perf_counter()
    result = viz.imagine(model, args.text, **_render_settings(args))
    _write_render(args, model, result, settings, time.perf_counter() - t0)
    return 0


def cmd_neuron(args: argparse.Namespace) -> int:
    """Neuron visualisation of one channel, under an optional text."""
    import time

    import viz
    from viz.figures import ChannelError, check_channels

    from .inputs import InputError

    _check_text(args.text, "--text")
    _check_render_args(args)
    model = _load(args)
    try:
        check_channels(model, args.layer, [args.channel])
    except ChannelError as e:
        raise InputError(str(e)) from None
    settings = {"layer": args.layer, "channel": args.channel, "text": args.text, "text_weight": args.text_weight,
                **_render_settings(args)}
    t0 = time.perf_counter()
    result = viz.neuron(model, args.layer, args.channel, args.text, text_weight=args.text_weight,
                        **_render_settings(args))
    _write_render(args, model, result, settings, time.perf_counter() - t0)
    return 0


def cmd_figures(args: argparse.Namespace) -> int:
    """Regenerate one of the paper's figures."""
    from viz import figures

    from .inputs import InputError

    if args.all:
        from viz.figures_all import run_cli

        return run_cli(args)
    if args.figure is None:
        raise InputError("name a figure (e.g. `brivl figures fig2 --out figs/`) or give --all --out DIR")
    if args.figure == "fig5c":
        return _fig5c(args)
    if args.figure == "fig3":
        return _fig3(args)
    _check_render_args(args)
    model = _load(args)
    try:
        info = figures.fig2(model, args.out, steps=args.steps, size=args.size, seed=args.seed, param=args.param,
                            decorrelate=args.decorrelate, lr=args.lr, channels=args.channels,
                            text_weight=args.text_weight, model_name=args.model)
    except figures.ChannelError as e:
        raise InputError(f"{e} (set them with --channels)") from None
    print(f"wrote {Path(args.out) / info['files']['grid']} and fig2.json ({info['time_s']:.1f} s)")
    return 0


def cmd_studio(args: argparse.Namespace) -> int:
    """Serve the Imagine studio until interrupted."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from .inputs import InputError

    if not 1 <= args.port <= 65535 or args.concurrency < 1:
        raise InputError(f"--port must be 1-65535 and --concurrency at least 1 (got {args.port}, {args.concurrency})")
    from app import launch

    models = args.models or ["brivl-lite", "tiny"]
    print(f"brivl studio: http://{args.host}:{args.port}/ ({models[0]}; Ctrl+C to stop)", file=sys.stderr)
    launch(models, port=args.port, host=args.host, device=args.device, steps=args.steps, size=args.size,
           vqgan=args.vqgan, concurrency=args.concurrency, open_browser=args.open, allow_dirs=args.allow_dirs)
    return 0


def _fig3(args: argparse.Namespace) -> int:
    """Fig. 3 by VQGAN inversion, with an optional CLIP-style model for panel a."""
    from viz import figures

    from .inputs import InputError

    _vqgan_defaults(args)
    _check_render_args(args)
    if args.cutn < 1 or not args.cut_pow > 0:
        raise InputError(f"--cutn must be >= 1 and --cut-pow > 0, got {args.cutn}, {args.cut_pow}")
    prompts = None
    if args.prompts:
        try:
            prompts = json.loads(Path(args.prompts).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise InputError(f"{args.prompts}: not a readable JSON file of {{panel: [texts]}}: {e}") from None
        if not isinstance(prompts, dict) or not all(isinstance(v, list) and v for v in prompts.values()):
            raise InputError(f"{args.prompts}: expected {{panel: [texts]}} with panels a-d")
        for texts in prompts.values():
            for t in texts:
                _check_text(t, "a prompt")
    model, vqgan = _load(args), _load_vqgan(args)
    compare = None if args.compare == "none" else _load(args, args.compare)
    try:
        info = figures.fig3(model, vqgan, args.out, compare=compare, model_name=args.model,
                            compare_name=None if compare is None else args.compare, prompts=prompts,
                            steps=args.steps, size=args.size, seed=args.seed, lr=args.lr, tokens=args.tokens,
                            cutn=args.cutn, cut_pow=args.cut_pow)
    except ValueError as e:
        raise InputError(str(e)) from None
    print(f"wrote {Path(args.out) / 'fig3.png'} and fig3.json ({info['time_s']:.1f} s)")
    return 0


# --- phrase retrieval (viz.phrases) and Fig. 5c ---------------------------------------------------------------

def _check_phrase_args(args: argparse.Namespace) -> None:
    from .inputs import InputError

    if args.limit is not None and args.limit < 1:
        raise InputError(f"--limit must be at least 1, got {args.limit}")
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}")
    if getattr(args, "k", 1) < 1:
        raise InputError(f"-k must be at least 1, got {args.k}")
    if args.phrases != "jieba" and not Path(args.phrases).is_file():
        raise InputError(f"{args.phrases}: no such phrase file (one phrase per line), and not 'jieba'")
    plot = getattr(args, "plot", None)
    if plot is not None and Path(plot).suffix.lower() != ".png":
        raise InputError(f"{plot}: the plot is written as PNG; give a path ending in .png")


def _phrase_index(args: argparse.Namespace, model, label: str, build: bool = True, plist=None, root=None):
    """The model's index of the phrase source in args (built or resumed when `build`; else it must exist)."""
    from viz import phrases as P

    plist = plist or P.read_phrases(args.phrases, args.limit)
    folder = Path(args.index) if args.index else P.default_index_folder(model, plist, root)
    if not build:
        return P.PhraseIndex.open(folder, model)
    show = sys.stderr.isatty()
    return P.build_index(model, folder, plist, batch_size=args.batch_size, model_name=label, progress=show)


def _phrase_errors():
    from viz.phrases import PhraseIndexError

    return PhraseIndexError


def cmd_phrases(args: argparse.Namespace) -> int:
    """Build or query a phrase index."""
    from .inputs import InputError

    _check_phrase_args(args)
    for q in getattr(args, "queries", None) or []:
        _check_text(q, "a query")
    model = _load(args)
    label = args.model
    if args.backbone:
        from .eval.backbone import TextBackboneModel

        try:
            model, label = TextBackboneModel(model), f"{args.model} (text backbone)"
        except TypeError as e:
            raise InputError(str(e)) from None
    try:
        if args.action == "build":
            index = _phrase_index(args, model, label)
            m = index.meta
            rate = f", {m['phrases_per_s']:,.0f} phrases/s" if m.get("phrases_per_s") else ""
            total = m.get("embed_seconds_all_runs")
            resumed = m.get("computed", len(index)) < len(index) and total is not None
            runs = f" ({total:.1f} s of embedding over all the runs that built it)" if resumed else ""
            print(f"{index.folder}: {len(index):,} phrases x {index.dim} ({m['dtype']}, "
                  f"{m.get('bytes', 0) / 2**20:.1f} MiB) from {m['source']}; built in "
                  f"{m.get('build_seconds', 0):.1f} s{rate}{runs}")
            return 0
        index = _phrase_index(args, model, label, build=False)
        hits = index.search(model, args.queries, k=args.k)
    except _phrase_errors() as e:
        raise InputError(str(e)) from None
    if args.json:
        print(json.dumps({q: [{"phrase": p, "cosine": round(c, 5)} for p, c in h]
                          for q, h in zip(args.queries, hits)}, ensure_ascii=False, indent=2))
    else:
        for q, h in zip(args.queries, hits):
            print(f"{q}  (top {len(h)} of {len(index):,})")
            for rank, (p, c) in enumerate(h, 1):
                print(f"{rank:4d}  {c:+.4f}  {p}")
    if args.plot:
        from viz import phrase_map as M
        from viz.figures import write_json

        out = Path(args.plot)
        maps = [[M.phrase_map(model, index, q, args.k, args.layout, args.seed, label)] for q in args.queries]
        info = M.draw_phrase_maps(maps, out)
        write_json({"queries": args.queries, "k": args.k, "layout": maps[0][0].layout, **info,
                    "panels": [{"query": m.query, "top": m.phrases, "cosine": m.scores} for r in maps for m in r]},
                   out.with_suffix(".json"))
        print(f"wrote {out} and {out.with_suffix('.json').name} (font: {info['font']['name']})")
    return 0


def _fig5c(args: argparse.Namespace) -> int:
    """Fig. 5c with one model and its comparison."""
    from viz import phrase_map as M
    from viz import phrases as P

    from .inputs import InputError

    args.backbone = False
    _check_phrase_args(args)
    queries = args.queries or list(M.FIG5C_QUERIES)
    for q in queries:
        _check_text(q, "a query")
    model = _load(args)
    columns = []
    if args.compare == "backbone":
        from .eval.backbone import TextBackboneModel

        try:
            columns.append((f"{args.model} text backbone", TextBackboneModel(model)))
        except TypeError as e:
            raise InputError(f"{e}; pass --compare none or --compare MODEL") from None
    elif args.compare != "none":
        columns.append((args.compare, _load(args, args.compare)))
    columns.append((args.model, model))
    try:
        plist = P.read_phrases(args.phrases, args.limit)
        root, args.index = args.index, None  # one index per model, in folders named by fingerprint under root
        built = [(label, m, _phrase_index(args, m, label, plist=plist, root=root)) for label, m in columns]
        info = M.fig5c(built, args.out, queries=queries, k=args.k, seed=args.seed, layout=args.layout)
    except _phrase_errors() as e:
        raise InputError(str(e)) from None
    font = info["font"]
    print(f"wrote {Path(args.out) / 'fig5c.png'} and fig5c.json ({info['time_s']:.1f} s; font {font['name']}"
          f"{', no CJK font: see the warning' if info['font_warning'] else ''})")
    return 0


# --- evaluation (brivl.eval) -------------------------------------------------------------------------------------

def _write_results(args: argparse.Namespace, result: dict, table: str, method: str) -> None:
    from .checkpoint import atomic_write_bytes

    result = {**result, "model": args.model, "method": method, "markdown": table}
    if args.output:
        atomic_write_bytes(Path(args.output), (json.dumps(result, indent=2, ensure_ascii=False) + "\n").encode())
    if args.markdown:
        atomic_write_bytes(Path(args.markdown), table.encode())
    print(table, end="")


def cmd_eval(args: argparse.Namespace) -> int:
    """Run one evaluation and print its markdown table."""
    from . import eval as E
    from .inputs import InputError

    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}")
    for path in (args.output, args.markdown):
        if path and Path(path).is_dir():
            raise InputError(f"{path} is a folder; give a file path")
    method = args.name or args.model
    templates = E.suite.check_templates(args.templates) if getattr(args, "templates", None) else E.PAPER_TEMPLATES
    try:
        if args.task == "zeroshot":
            if args.splits < 1:
                raise InputError(f"--splits must be at least 1, got {args.splits}")
            data = E.read_class_folders(args.folder, args.classes)
            ratios = [E.parse_ratio(r, data.n_classes) for r in (args.ratios or [f"{data.n_classes}/0"])]
            model = _load(args)
            res = E.zero_shot_classification(model, data, ratios, n_splits=args.splits, seed=args.seed,
                                             templates=templates, batch_size=args.batch_size)
            table = E.markdown_zeroshot([(method, res)])
        elif args.task == "textcls":
            data = E.read_labelled_texts(args.tsv, args.classes)
            model = _load(args)
            if args.backbone:
                try:
                    model = E.TextBackboneModel(model)
                except TypeError as e:
                    raise InputError(str(e)) from None
                method = args.name or f"{args.model} (text backbone)"
            res = E.text_classification(model, data, templates=templates, batch_size=args.batch_size)
            table = E.markdown_textcls([(method, Path(args.tsv).stem, res)])
        else:
            data = E.read_retrieval_set(args.manifest)
            model = _load(args)
            res = E.retrieval(model, data, batch_size=args.batch_size)
            table = E.markdown_retrieval([(method, res)])
    except E.SplitError as e:
        raise InputError(str(e)) from None
    _write_results(args, res, table, method)
    return 0


COMMANDS = {"info": cmd_info, "encode-text": cmd_encode_text, "encode-image": cmd_encode_image,
            "similarity": cmd_similarity, "convert": cmd_convert, "train": cmd_train,
            "make-toy-data": cmd_make_toy_data, "build-default": cmd_build_default, "build-vqgan": cmd_build_vqgan, "imagine": cmd_imagine,
            "neuron": cmd_neuron, "figures": cmd_figures, "studio": cmd_studio, "phrases": cmd_phrases, "eval": cmd_eval}

if __name__ == "__main__":
    sys.exit(main())

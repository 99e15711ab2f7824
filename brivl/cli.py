"""The `brivl` command: one entry point, the core's subcommands, and those each floor above registers."""
from __future__ import annotations

import argparse
import importlib
import inspect
import io
import json
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from . import eval as E
from .boxes import RELEASE_MAX_BOXES, boxes_for, load_images_with_boxes, read_release_jsonl
from .checkpoint import atomic_write_bytes, save_safetensors
from .errors import BrivlError, InputError
from .hf import refuse_remote_code
from .hub import load
from .images import load_images
from .model.brivl import BriVL
from .official import load_official, release_of
from .toydata import make_toy_pairs
from .train import TrainConfig, train
from .twotower import HasPatches, model_name

EXIT_BAD_INPUT = 2
OUTPUT_SUFFIXES = (".npy", ".json", ".safetensors")


def model_arguments(p: argparse.ArgumentParser) -> None:
    """The positional model and the --tokenizer and --device options every model command takes (floors too)."""
    p.add_argument("model", help="a preset (tiny), a folder from save_pretrained/convert, a weights file, "
                                 "openclip:ARCH[:CKPT] or hf:FOLDER (a transformers CLIP-family folder)")
    p.add_argument("--tokenizer", help="tokenizer folder or vocab.txt, for models saved without one")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def _eval_common(p: argparse.ArgumentParser, batch: int, templates: bool = True) -> None:
    if templates:
        p.add_argument("--template", action="append", dest="templates",
                       help="prompt template with {} for the class name; repeat to average several (default: the "
                            "class name alone, as in the paper)")
    p.add_argument("--name", help="the method name in the table (default: the model argument)")
    p.add_argument("--batch-size", type=int, default=batch, help=f"batch size (default {batch})")
    p.add_argument("-o", "--output", help="write the results as JSON here")
    p.add_argument("--markdown", help="write the markdown table here")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"brivl: warning: {message}", file=sys.stderr)


def load_model(args: argparse.Namespace, name: str | None = None):
    """The model named by args.model (or `name`) on args.device, with args.tokenizer where it takes one."""
    name = args.model if name is None else name
    if name.startswith(("openclip:", "hf:")):  # hub.load routes them; they bring their own tokenizers
        return load(name, device=args.device)
    return load(name, device=args.device, tokenizer=args.tokenizer)


def _boxes_text(im) -> str:
    """How the image tower picks its boxes, in words."""
    grid = f"{im.box_grid}x{im.box_grid} grid + whole image"
    if im.boxes == "detector":
        return f"up to {im.num_patches - 1} detector boxes (--boxes) + whole image, padded and masked; {grid} if none"
    return grid


def _print_rows(rows: list[tuple[str, object]]) -> None:
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


def tokenizer_text(tok) -> str:
    """A tokenizer in words: its algorithm (WordPiece, Unigram, BPE) and vocabulary size, not a wrapper class name."""
    algorithm = type(getattr(getattr(tok, "backend_tokenizer", None), "model", None)).__name__
    if algorithm == "NoneType":  # a slow (pure Python) tokenizer: its class says what it is
        algorithm = type(tok).__name__
    size = f", {len(tok):,} tokens" if hasattr(tok, "__len__") else ""
    return f"{algorithm}{size}"


def cmd_info(args: argparse.Namespace) -> int:
    """Print a model's layout and sizes (for a model of another family, what the TwoTower protocol tells)."""
    model = load_model(args)
    if not isinstance(model, BriVL):
        n = sum(p.numel() for p in model.parameters()) if isinstance(model, torch.nn.Module) else 0
        _print_rows([("model", model_name(model)), ("kind", type(model).__name__), ("joint dim", model.embed_dim),
                     ("image size", f"{model.image_size}px"), ("parameters", f"{n / 1e6:.2f} M"),
                     ("feature layers", ", ".join(model.feature_layers())),
                     ("patches", "yes" if isinstance(model, HasPatches) else "no (no patch attribution)")])
        return 0
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
        ("tokenizer", "missing (pass --tokenizer)" if model.tokenizer is None else tokenizer_text(model.tokenizer)),
        ("parameters", f"image {count(model.imgencoder) / 1e6:.2f} M, text {count(model.textencoder) / 1e6:.2f} M"),
        ("feature layers", ", ".join(model.feature_layers())),
        ("MoCo", f"queue {cfg.queue_size}, momentum {cfg.momentum}, temperature {cfg.temperature}"),
    ]
    _print_rows(rows)
    return 0


def _read_texts(texts: list[str]) -> list[str]:
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
    texts = _read_texts(args.texts)
    model = load_model(args)
    with torch.inference_mode():
        emb = model.encode_text(texts)
    labels = [t if len(t) <= 40 else t[:37] + "..." for t in texts]
    _save(args.output, emb, texts) if args.output else _print_embeddings(labels, emb)
    return 0


def _encode_images(model, paths: list[str], boxes_file: str | None = None):
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
    model = load_model(args)
    config = getattr(model, "config", None)
    if args.boxes is None and config is not None and config.image.boxes == "detector":
        warnings.warn(f"{config.name} was trained on detector boxes; without --boxes it sees the "
                      f"{config.image.box_grid}x{config.image.box_grid} grid", stacklevel=1)
    emb = _encode_images(model, args.images, args.boxes)
    _save(args.output, emb, args.images) if args.output else _print_embeddings(args.images, emb)
    return 0


def cmd_similarity(args: argparse.Namespace) -> int:
    """Print the image x text cosine similarity table."""
    model = load_model(args)
    texts = _read_texts(args.texts)
    images = _encode_images(model, args.images)
    with torch.inference_mode():
        sims = images @ model.encode_text(texts).T
    names = [Path(p).name for p in args.images]
    width = max(len(n) for n in names)
    print(f"cosine similarity ({model_name(model)}, {model.embed_dim}-d)")
    # Absolute cosines of a joint space are small and model-specific; the ranking in a row is what zero-shot uses.
    print(" " * width + "".join(f" {f'[{j}]':>6}" for j in range(len(texts))) + "  best")
    for name, row in zip(names, sims):
        print(f"{name:<{width}}" + "".join(f" {v:+.3f}" for v in row.tolist()) + f"  [{int(row.argmax())}]")
    _print_probabilities(model, names, sims, width)
    for j, t in enumerate(texts):
        print(f"[{j}] {t}")
    return 0


def _print_probabilities(model, names: list[str], sims: torch.Tensor, width: int) -> None:
    """Each image's probability over the texts: softmax of cosine / temperature, as zero-shot classification reads
    the cosines (a difference of 0.05 in cosine is a factor of 2 at temperature 0.07)."""
    temperature = float(getattr(getattr(model, "config", None), "temperature", 0.07) or 0.07)
    probs = torch.softmax(sims.float() / temperature, dim=1)
    print(f"which text fits each image: softmax over the texts of cosine / {temperature:g} (the model's temperature)")
    print(" " * width + "".join(f" {f'[{j}]':>6}" for j in range(sims.shape[1])))
    for name, row in zip(names, probs):
        print(f"{name:<{width}}" + "".join(f" {v:6.1%}" for v in row.tolist()))


def cmd_convert(args: argparse.Namespace) -> int:
    """Convert an official checkpoint to a model folder."""
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
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfg = TrainConfig.load(args.config)
    if args.steps is not None:
        cfg.steps = args.steps
    last = train(cfg, resume=args.resume, progress=True)
    if last and os.environ.get("RANK", "0") == "0":
        print(json.dumps(last))
    return 0


def cmd_make_toy_data(args: argparse.Namespace) -> int:
    """Write the toy captioned-shapes data set."""
    print(make_toy_pairs(args.folder, args.n, size=args.size, seed=args.seed))
    return 0


def _write_results(args: argparse.Namespace, result: dict, table: str, method: str) -> None:
    result = {**result, "model": args.model, "method": method, "markdown": table}
    if args.output:
        atomic_write_bytes(Path(args.output), (json.dumps(result, indent=2, ensure_ascii=False) + "\n").encode())
    if args.markdown:
        atomic_write_bytes(Path(args.markdown), table.encode())
    print(table, end="")


def cmd_eval(args: argparse.Namespace) -> int:
    """Run one evaluation and print its markdown table."""
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}")
    for path in (args.output, args.markdown):
        if path and Path(path).is_dir():
            raise InputError(f"{path} is a folder; give a file path")
    method = args.name or args.model
    templates = E.suite.check_templates(args.templates) if getattr(args, "templates", None) else E.PAPER_TEMPLATES
    if args.task == "zeroshot":
        if args.splits < 1:
            raise InputError(f"--splits must be at least 1, got {args.splits}")
        data = E.read_class_folders(args.folder, args.classes)
        ratios = [E.parse_ratio(r, data.n_classes) for r in (args.ratios or [f"{data.n_classes}/0"])]
        model = load_model(args)
        res = E.zero_shot_classification(model, data, ratios, n_splits=args.splits, seed=args.seed,
                                         templates=templates, batch_size=args.batch_size, progress=True)
        table = E.markdown_zeroshot([(method, res)])
    elif args.task == "textcls":
        data = E.read_labelled_texts(args.tsv, args.classes)
        model = load_model(args)
        if args.backbone:
            model = E.TextBackboneModel(model)  # NotSupportedError for a model without a text backbone
            method = args.name or f"{args.model} (text backbone)"
        res = E.text_classification(model, data, templates=templates, batch_size=args.batch_size, progress=True)
        table = E.markdown_textcls([(method, Path(args.tsv).stem, res)])
    else:
        data = E.read_retrieval_set(args.manifest)
        model = load_model(args)
        res = E.retrieval(model, data, batch_size=args.batch_size, progress=True)
        table = E.markdown_retrieval([(method, res)])
    _write_results(args, res, table, method)
    return 0


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="describe a model: layout, sizes, parameter counts")
    model_arguments(p)
    p.set_defaults(run=cmd_info)


def _add_encode_text(sub) -> None:
    p = sub.add_parser("encode-text", help="embed texts (print them, or save with -o)")
    model_arguments(p)
    p.add_argument("texts", nargs="+", help="texts to embed; '-' reads one text per line from stdin")
    p.add_argument("-o", "--output", help="save embeddings to .npy, .json or .safetensors")
    p.set_defaults(run=cmd_encode_text)


def _add_encode_image(sub) -> None:
    p = sub.add_parser("encode-image", help="embed image files (print them, or save with -o)")
    model_arguments(p)
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--boxes", help="JSONL of detector boxes in the BriVL-1.0 release's format, one line per image: "
                                   "{\"image_id\": PATH, \"bbox\": [[x1, y1, x2, y2], ...]} in the file's pixels "
                                   "(the first 36 are kept, the whole image is added; default: the 6x6 grid)")
    p.add_argument("-o", "--output", help="save embeddings to .npy, .json or .safetensors")
    p.set_defaults(run=cmd_encode_image)


def _add_similarity(sub) -> None:
    p = sub.add_parser("similarity", help="cosine similarity of every image with every text")
    model_arguments(p)
    p.add_argument("--text", "-t", nargs="+", required=True, dest="texts", help="texts")
    p.add_argument("--image", "-i", nargs="+", required=True, dest="images", help="image files")
    p.set_defaults(run=cmd_similarity)


def _add_convert(sub) -> None:
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
    p.set_defaults(run=cmd_convert)


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="cross-modal MoCo pre-training on DeepSpeed (see README: Training)")
    p.add_argument("--config", required=True, help="a YAML training config")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in the output folder")
    p.add_argument("--steps", type=int, help="override the number of steps")
    p.add_argument("--local_rank", type=int, help=argparse.SUPPRESS)  # passed by the deepspeed launcher
    p.set_defaults(run=cmd_train)


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="zero-shot classification (images, texts) and image-text retrieval")
    evals = p.add_subparsers(dest="task", required=True, metavar="TASK")
    f = evals.add_parser("zeroshot", help="zero-shot image classification on class folders, with the paper's "
                                          "unseen/seen splits (mean and std over 25 random splits)")
    model_arguments(f)
    f.add_argument("folder", help="a folder with one sub-folder of images per class (folder name = class name)")
    f.add_argument("--classes", help="class-name mapping: JSON {folder: name} or lines 'folder<TAB>name'")
    f.add_argument("--ratios", nargs="+", help="unseen/seen class ratios, e.g. 21/0 16/5 (default: every class "
                                               "unseen, C/0); U/S = U classes tested, S left out")
    f.add_argument("--splits", type=int, default=25, help="random splits per ratio with seen classes (default 25)")
    f.add_argument("--seed", type=int, default=0, help="seed of the splits (default 0)")
    _eval_common(f, batch=32)
    f = evals.add_parser("textcls", help="zero-shot text classification: each text to the nearest class name")
    model_arguments(f)
    f.add_argument("tsv", help="lines 'text<TAB>label'")
    f.add_argument("--classes", help="label-to-class-name mapping: JSON {label: name} or lines 'label<TAB>name'")
    f.add_argument("--backbone", action="store_true", help="classify with the model's text backbone alone "
                                                           "(the paper's RoBERTa baselines of Fig. 5a)")
    _eval_common(f, batch=128)
    f = evals.add_parser("retrieval", help="image<->text Recall@1/5/10 and Recall@SUM (several captions per image)")
    model_arguments(f)
    f.add_argument("manifest", help="JSONL {image, text|captions} or TSV image<TAB>caption; rows of one image merge")
    _eval_common(f, batch=32, templates=False)
    p.set_defaults(run=cmd_eval)


def _add_make_toy_data(sub) -> None:
    p = sub.add_parser("make-toy-data", help="write a procedural captioned-shapes data set (for smoke tests)")
    p.add_argument("folder", help="where to write images/ and manifest.jsonl")
    p.add_argument("-n", type=int, default=512, help="number of pairs (default 512)")
    p.add_argument("--size", type=int, default=96, help="image side in pixels (default 96)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=cmd_make_toy_data)


def register_core(sub) -> None:
    """Add this floor's subcommands to the `brivl` command's subparsers."""
    _add_info(sub)
    _add_encode_text(sub)
    _add_encode_image(sub)
    _add_similarity(sub)
    _add_convert(sub)
    _add_train(sub)
    _add_eval(sub)
    _add_make_toy_data(sub)

# The floors above the core, by module: each has `register(subparsers)` adding its own subcommands. The core
# never imports them by name (brivl does not depend on viz, the recipes or the studio); one that is not
# installed (a core install without the [viz] or [studio] extra) adds no commands. Each floor is named as a
# wheel installs it, then as the repository's folder (pyproject.toml's package-dir says why they differ).
FLOORS = (("brivl.viz.cli",), ("brivl_recipes.cli", "recipes.cli"), ("brivl_studio.cli", "app.cli"))


def _floor_modules() -> list:
    """The installed floors' command modules, in FLOORS order (the first name of each that imports)."""
    found = []
    for names in FLOORS:
        for name in names:
            try:
                found.append(importlib.import_module(name))
                break
            except ModuleNotFoundError as e:  # that floor, or a dependency only its extra installs, is absent
                if e.name is None or e.name.split(".")[0] == "brivl":
                    raise  # a module of the core itself is missing: a broken install, not a missing extra
    return found


def build_parser(floors: bool = False) -> argparse.ArgumentParser:
    """The argument parser of the `brivl` command: the core's subcommands, and with `floors` every installed floor's.

    The core's parser alone imports nothing above the core: `brivl similarity ...` never loads viz.
    """
    parser = argparse.ArgumentParser(prog="brivl", description="BriVL two-tower vision-language models, offline.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register_core(sub)
    if floors:
        for floor in _floor_modules():
            floor.register(sub)
    return parser


def _is_core_command(parser: argparse.ArgumentParser, argv: list[str]) -> bool:
    """Whether argv names one of the parser's subcommands (its first word that is not an option)."""
    command = next((a for a in argv if not a.startswith("-")), None)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))  # noqa: SLF001 - argparse's
    return command in sub.choices


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `brivl` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not _is_core_command(parser, argv):  # a floor's command, --help, or a mistake: every floor's commands
        parser = build_parser(floors=True)
    args = parser.parse_args(argv)
    with warnings.catch_warnings():  # show warnings as one line each, only while the command runs
        warnings.simplefilter("default")
        warnings.showwarning = _show_warning
        try:
            if args.command in ("encode-text", "encode-image"):
                check_output_suffix(args.output)
            return args.run(args)
        except BrivlError as e:  # the one error family: a message; anything else is a bug (a traceback)
            print(f"brivl {args.command}: error: {e}", file=sys.stderr)
            return EXIT_BAD_INPUT


def check_output_suffix(output: str | None) -> None:
    """Refuse an embeddings output path whose suffix names no format brivl writes."""
    if output and Path(output).suffix not in OUTPUT_SUFFIXES:
        raise InputError(f"{output}: unknown output format; use {', '.join(OUTPUT_SUFFIXES)}")


if __name__ == "__main__":
    sys.exit(main())

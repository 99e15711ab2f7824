"""The core's command implementations behind `brivl`'s parser (brivl.cli): the heavy imports live here.

brivl.cli names each command as "brivl.commands:cmd_x" and imports this module only when one of them runs, so
`brivl --help` and a parse error never load torch.
"""
from __future__ import annotations

import argparse
import inspect
import io
import json
import logging
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from . import eval as E
from .boxes import RELEASE_MAX_BOXES, boxes_for, load_images_with_boxes, read_release_jsonl
from .checkpoint import atomic_write_bytes, save_safetensors
from .cli import OUTPUT_SUFFIXES
from .errors import InputError
from .hf import refuse_remote_code
from .hub import load
from .images import load_images
from .model.brivl import BriVL
from .official import load_official, release_of
from .toydata import make_toy_pairs
from .train import TrainConfig, train
from .twotower import HasPatches, model_name


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


def tokenizer_text(tok) -> str:
    """A tokenizer in words: its algorithm (WordPiece, Unigram, BPE) and vocabulary size, not a wrapper class name."""
    algorithm = type(getattr(getattr(tok, "backend_tokenizer", None), "model", None)).__name__
    if algorithm == "NoneType":  # a slow (pure Python) tokenizer: its class says what it is
        algorithm = type(tok).__name__
    size = f", {len(tok):,} tokens" if hasattr(tok, "__len__") else ""
    return f"{algorithm}{size}"


def info_rows(args: argparse.Namespace) -> list[tuple[str, object]]:
    """`brivl info`'s rows for the model args name, built and measured."""
    return model_rows(load_model(args))


def model_rows(model) -> list[tuple[str, object]]:
    """A model's layout and sizes as (label, value) rows (for a model of another family, what TwoTower tells)."""
    if not isinstance(model, BriVL):
        n = sum(p.numel() for p in model.parameters()) if isinstance(model, torch.nn.Module) else 0
        return [("model", model_name(model)), ("kind", type(model).__name__), ("joint dim", model.embed_dim),
                ("image size", f"{model.image_size}px"), ("parameters", f"{n / 1e6:.2f} M"),
                ("feature layers", ", ".join(model.feature_layers())),
                ("patches", "yes" if isinstance(model, HasPatches) else "no (no patch attribution)")]
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
    return rows


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



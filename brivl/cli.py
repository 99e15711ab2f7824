"""The `brivl` command: one entry point, the core's subcommands, and those each floor above registers.

This module is the parser alone and imports no torch: a subcommand names its implementation as "module:function"
(the core's live in brivl.commands) and main imports it only to run it, so `brivl --help` answers in a second.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from .errors import BrivlError, InputError

EXIT_BAD_INPUT = 2
OUTPUT_SUFFIXES = (".npy", ".json", ".safetensors")
COMMANDS = f"{__package__}.commands"  # where this floor's command functions live


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


def runs(parser: argparse.ArgumentParser, module: str, function: str) -> None:
    """Name what a subcommand runs, `function` of `module`; main imports that module only when the command runs."""
    parser.set_defaults(run=f"{module}:{function}")


def command_function(target: str):
    """The function a subcommand's "module:function" names, its module imported now."""
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"brivl: warning: {message}", file=sys.stderr)


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="describe a model: layout, sizes, parameter counts")
    model_arguments(p)
    runs(p, f"{__package__}.describe", "cmd_info")  # a stored description first: no torch


def _add_encode_text(sub) -> None:
    p = sub.add_parser("encode-text", help="embed texts (print them, or save with -o)")
    model_arguments(p)
    p.add_argument("texts", nargs="+", help="texts to embed; '-' reads one text per line from stdin")
    p.add_argument("-o", "--output", help="save embeddings to .npy, .json or .safetensors")
    runs(p, COMMANDS, "cmd_encode_text")


def _add_encode_image(sub) -> None:
    p = sub.add_parser("encode-image", help="embed image files (print them, or save with -o)")
    model_arguments(p)
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--boxes", help="JSONL of detector boxes in the BriVL-1.0 release's format, one line per image: "
                                   "{\"image_id\": PATH, \"bbox\": [[x1, y1, x2, y2], ...]} in the file's pixels "
                                   "(the first 36 are kept, the whole image is added; default: the 6x6 grid)")
    p.add_argument("-o", "--output", help="save embeddings to .npy, .json or .safetensors")
    runs(p, COMMANDS, "cmd_encode_image")


def _add_similarity(sub) -> None:
    p = sub.add_parser("similarity", help="cosine similarity of every image with every text")
    model_arguments(p)
    p.add_argument("--text", "-t", nargs="+", required=True, dest="texts", help="texts")
    p.add_argument("--image", "-i", nargs="+", required=True, dest="images", help="image files")
    runs(p, COMMANDS, "cmd_similarity")


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
    runs(p, COMMANDS, "cmd_convert")


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="cross-modal MoCo pre-training on DeepSpeed (see README: Training)")
    p.add_argument("--config", required=True, help="a YAML training config")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in the output folder")
    p.add_argument("--steps", type=int, help="override the number of steps")
    p.add_argument("--local_rank", type=int, help=argparse.SUPPRESS)  # passed by the deepspeed launcher
    runs(p, COMMANDS, "cmd_train")


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
    runs(p, COMMANDS, "cmd_eval")


def _add_make_toy_data(sub) -> None:
    p = sub.add_parser("make-toy-data", help="write a procedural captioned-shapes data set (for smoke tests)")
    p.add_argument("folder", help="where to write images/ and manifest.jsonl")
    p.add_argument("-n", type=int, default=512, help="number of pairs (default 512)")
    p.add_argument("--size", type=int, default=96, help="image side in pixels (default 96)")
    p.add_argument("--seed", type=int, default=0)
    runs(p, COMMANDS, "cmd_make_toy_data")


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


def _installed(module: str) -> bool:
    """Whether a top-level module can be imported, found without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a finder that refuses the name: not installed here
        return False


def _floor_modules() -> list:
    """The installed floors' command modules, in FLOORS order (the first name of each that imports)."""
    found = []
    for names in FLOORS:
        for name in names:
            try:
                module = importlib.import_module(name)
            except ModuleNotFoundError as e:  # that floor, or a dependency only its extra installs, is absent
                if e.name is None or e.name.split(".")[0] == "brivl":
                    raise  # a module of the core itself is missing: a broken install, not a missing extra
                continue
            # A floor's parser imports no extra, so what its commands need is checked by name (nothing imported).
            if all(_installed(req) for req in getattr(module, "REQUIRES", ())):
                found.append(module)
            break
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
            return command_function(args.run)(args)
        except BrivlError as e:  # the one error family: a message; anything else is a bug (a traceback)
            print(f"brivl {args.command}: error: {e}", file=sys.stderr)
            return EXIT_BAD_INPUT


def check_output_suffix(output: str | None) -> None:
    """Refuse an embeddings output path whose suffix names no format brivl writes."""
    if output and Path(output).suffix not in OUTPUT_SUFFIXES:
        raise InputError(f"{output}: unknown output format; use {', '.join(OUTPUT_SUFFIXES)}")


if __name__ == "__main__":
    sys.exit(main())

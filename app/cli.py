"""The studio's subcommand of `brivl`: studio (the Imagine page on 127.0.0.1)."""
from __future__ import annotations

import argparse
import os
import sys

from brivl.cli import runs
from brivl.errors import InputError


REQUIRES = ("gradio", "kornia", "matplotlib")  # the [studio] extra (which brings [viz]); checked without importing


def cmd_studio(args: argparse.Namespace) -> int:
    """Serve the Imagine studio until interrupted."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    if not 1 <= args.port <= 65535 or args.concurrency < 1:
        raise InputError(f"--port must be 1-65535 and --concurrency at least 1 (got {args.port}, {args.concurrency})")
    from .studio import launch  # deferred: gradio (the [studio] extra) loads only when the studio starts

    models = args.models or ["brivl-lite", "tiny"]
    print(f"brivl studio: http://{args.host}:{args.port}/ ({models[0]}; Ctrl+C to stop)", file=sys.stderr)
    launch(models, port=args.port, host=args.host, device=args.device, steps=args.steps, size=args.size,
           vqgan=args.vqgan, concurrency=args.concurrency, open_browser=args.open, allow_dirs=args.allow_dirs)
    return 0


def _add_studio(sub) -> None:
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
    runs(p, __name__, "cmd_studio")


def register(sub) -> None:
    """Add this floor's subcommands to the `brivl` command's subparsers."""
    _add_studio(sub)

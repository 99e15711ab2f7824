"""The recipes' subcommands of `brivl`: build-default (brivl-lite) and build-vqgan (vqgan-lite)."""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import yaml

from .brivl_lite import build as lite_v2
from .brivl_lite import recipe as lite_v1
from .vqgan_lite.build import VQGANBuildConfig, build_vqgan


def cmd_build_default(args: argparse.Namespace) -> int:
    """Run the brivl-lite build recipe (version 2 unless the config says `version: 1`)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    data = yaml.safe_load(Path(args.config).read_text()) if args.config else {}
    recipe = lite_v1 if isinstance(data, dict) and data.get("version") == 1 else lite_v2
    config_class = lite_v1.BuildConfig if recipe is lite_v1 else lite_v2.LiteBuildConfig
    cfg = config_class.load(args.config) if args.config else config_class()
    if args.work:
        cfg.work = args.work
    if args.out:
        cfg.out = args.out
    print(json.dumps(recipe.build_default(cfg), ensure_ascii=False))
    return 0


def cmd_build_vqgan(args: argparse.Namespace) -> int:
    """Train, export and measure the embedded VQGAN."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfg = VQGANBuildConfig.load(args.config) if args.config else VQGANBuildConfig()
    for key in ("work", "out", "steps"):
        if getattr(args, key) is not None:
            setattr(cfg, key, getattr(args, key))
    print(json.dumps(build_vqgan(cfg, progress=True)))
    return 0


def _add_build_default(sub) -> None:
    p = sub.add_parser("build-default", help="rebuild the brivl-lite heads from installed packages (hours; resumable)")
    p.add_argument("--config", default=None, help="a YAML build config (default: the built-in full recipe)")
    p.add_argument("--work", help="override the work folder")
    p.add_argument("--out", help="override where the heads are written")
    p.set_defaults(run=cmd_build_default)


def _add_build_vqgan(sub) -> None:
    p = sub.add_parser("build-vqgan", help="train the embedded VQGAN (vqgan-lite) on offline images (resumable)")
    p.add_argument("--config", default=None, help="a YAML build config (default: configs/build-vqgan.yaml's "
                                                   "values, built in)")
    p.add_argument("--work", help="override the work folder")
    p.add_argument("--out", help="override where the VQGAN is written")
    p.add_argument("--steps", type=int, help="override the number of steps")
    p.set_defaults(run=cmd_build_vqgan)


def register(sub) -> None:
    """Add this floor's subcommands to the `brivl` command's subparsers."""
    _add_build_default(sub)
    _add_build_vqgan(sub)

"""The recipes' command implementations behind their parser (recipes.cli), imported only when one runs."""
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

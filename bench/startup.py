"""Start-up of the `brivl` command: seconds per call in fresh processes, and the ratio to `import torch` alone.

    .venv/bin/python bench/startup.py [--repeats 5] [--out bench/results/startup.json]

Each case runs `repeats` times in a new interpreter (the median is kept), all in this run, so the ratios hold on a
loaded machine too. The baseline, `python -c "import torch"`, is the least any command that builds a model pays.
- `brivl --help`: every floor's parser (no torch since the parsers import no command module);
- `brivl info brivl-lite`: its shipped description (brivl.describe), no model built;
- `brivl info FOLDER`, a saved tiny model: first call builds it (cache empty), the next reads the cached description;
- `brivl info brivl-lite` with the description bypassed (--tokenizer given): the model built, as before this change.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BRIVL = [str(Path(sys.executable).parent / "brivl")]  # the console script a user runs


def seconds(argv: list[str], env: dict[str, str], repeats: int, fresh_cache: bool = False) -> float:
    """Median wall time of a command in new processes (a new empty BRIVL_CACHE per run with fresh_cache)."""
    times = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as cache:
            run_env = dict(env, BRIVL_CACHE=cache) if fresh_cache else env
            t = time.perf_counter()
            subprocess.run(argv, env=run_env, cwd=ROOT, check=True, capture_output=True)
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    """Run every case and print and write the seconds and ratios."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "bench/results/startup.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, BRIVL_CACHE=str(Path(tmp) / "cache"))
        folder = Path(tmp) / "tiny"
        subprocess.run([sys.executable, "-c", f"import brivl; brivl.load('tiny').save_pretrained({str(folder)!r})"],
                       check=True, env=env)
        tokenizer = str(folder)  # the folder holds the tiny tokenizer: --tokenizer bypasses the description
        cases = {
            "import torch (baseline)": ([sys.executable, "-c", "import torch"], False),
            "brivl --help": ([*BRIVL, "--help"], False),
            "brivl info brivl-lite (shipped description)": ([*BRIVL, "info", "brivl-lite"], False),
            "brivl info FOLDER, first call (model built)": ([*BRIVL, "info", str(folder)], True),
            "brivl info FOLDER, cached description": ([*BRIVL, "info", str(folder)], False),
            "brivl info brivl-lite, model built (--tokenizer)": ([*BRIVL, "info", "brivl-lite", "--tokenizer",
                                                                  tokenizer], False),
        }
        subprocess.run(cases["brivl info FOLDER, cached description"][0], env=env, check=True, capture_output=True)
        result = {name: seconds(argv, env, args.repeats, fresh) for name, (argv, fresh) in cases.items()}
    base = result["import torch (baseline)"]
    rows = {name: {"seconds": round(s, 3), "ratio_to_import_torch": round(s / base, 3)} for name, s in result.items()}
    for name, row in rows.items():
        print(f"{name:<52} {row['seconds']:7.3f} s  {row['ratio_to_import_torch']:6.3f} x import torch")
    report = {"repeats": args.repeats, "cpus": os.cpu_count(), "cases": rows}
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""The paper's efficiency claim: MoCo (small batch + queue) vs in-batch negatives (huge batch), same negatives.

Runs each variant in its own process on the same small model and prints peak memory and step time,
and their ratios. Usage: python bench/moco_memory.py [--negatives 4096] [--moco-batch 32] [--image-size 64]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_variant(variant: str, batch: int, queue: int, image_size: int, steps: int) -> dict:
    """Time `steps` optimisation steps of one variant in this process; memory from the OS (or CUDA)."""
    from brivl.config import BriVLConfig, preset
    from brivl.model.brivl import BriVL
    from brivl.moco import CrossModalMoCo

    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = preset("tiny").to_dict()
    cfg["image"]["image_size"] = image_size
    model = BriVL(BriVLConfig.from_dict(cfg))
    moco = CrossModalMoCo(model, loss=variant, queue_size=queue).to(device).train()
    opt = torch.optim.Adam([p for p in moco.parameters() if p.requires_grad], lr=1e-4, weight_decay=1e-5)
    words = ["red", "blue", "green", "circle", "square", "sky", "grass", "left", "right"]
    g = torch.Generator().manual_seed(0)
    texts = [" ".join(words[int(i)] for i in torch.randint(len(words), (4,), generator=g)) for _ in range(batch)]
    tokens = {k: v.to(device) for k, v in model.tokenize(texts).items()}
    pixels = torch.rand(batch, 3, image_size, image_size, generator=g).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    before = _rss_mib()
    times = []
    for _ in range(steps + 1):  # the first step warms up allocators and kernels and is not timed
        t0 = time.perf_counter()
        loss = moco(pixels, tokens["input_ids"], tokens["attention_mask"])["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {"variant": variant, "batch": batch, "queue": queue if variant == "moco" else 0,
           "negatives": queue if variant == "moco" else batch - 1, "step_s": sum(times[1:]) / steps,
           "peak_mib": peak_rss, "step_mib": peak_rss - before, "device": device.type}
    if device.type == "cuda":
        out["peak_mib"] = out["step_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main() -> None:
    """Run both variants in child processes and print the comparison."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--negatives", type=int, default=4096)
    ap.add_argument("--moco-batch", type=int, default=32)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--variant", choices=["moco", "inbatch"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:
        batch = args.moco_batch if args.variant == "moco" else args.negatives
        print(json.dumps(run_variant(args.variant, batch, args.negatives, args.image_size, args.steps)))
        return
    rows = {}
    for variant in ("moco", "inbatch"):
        proc = subprocess.run([sys.executable, __file__, "--variant", variant, "--negatives", str(args.negatives),
                               "--moco-batch", str(args.moco_batch), "--image-size", str(args.image_size),
                               "--steps", str(args.steps)], capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"{variant} failed:\n{proc.stderr[-2000:]}")
        rows[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
    m, b = rows["moco"], rows["inbatch"]
    print(f"tiny BriVL @ {args.image_size}px on {m['device']}, {args.negatives} negatives per query, "
          f"{args.steps} timed steps each (one process per variant)")
    print(f"{'variant':<10}{'batch':>7}{'queue':>7}{'step s':>10}{'peak MiB':>11}{'step MiB':>11}")
    for r in (m, b):
        print(f"{r['variant']:<10}{r['batch']:>7}{r['queue']:>7}{r['step_s']:>10.3f}{r['peak_mib']:>11.0f}"
              f"{r['step_mib']:>11.0f}")
    print(f"ratio in-batch / MoCo: peak memory x{b['peak_mib'] / m['peak_mib']:.1f}, "
          f"memory used by the step x{b['step_mib'] / max(m['step_mib'], 1):.1f}, "
          f"step time x{b['step_s'] / m['step_s']:.1f}")
    print(f"per pair seen: MoCo {m['step_s'] / m['batch'] * 1e3:.2f} ms, in-batch {b['step_s'] / b['batch'] * 1e3:.2f} ms")


if __name__ == "__main__":
    main()

"""How fast the visualisation loop runs, against what the image tower alone allows, and what batching prompts buys.

Two ratios, both measured in this one process on the same model, size and device:
  1. render steps/s (viz.render: parameterisation, transforms, objective, Adam) / steps/s of a bare forward +
     backward of the image tower on the same batch (gradient to the pixels only, as in the render loop): the
     limit. 1.0 means the loop adds nothing to the tower's own cost.
  2. time per prompt when 4 prompts share one batch / time for one prompt alone. Below 1 means batching pays.
     Beside it the same ratio for the bare tower (time per image at batch 4 / at batch 1): the most batching can
     buy on this device.

Usage: python bench/render.py [--model tiny] [--steps 16] [--size S] [--prompts 4] [--repeats 3] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import json
import time

import torch

PROMPTS = ("nature", "time", "science", "dream", "mountains with snow", "a goldfish", "a lemon", "a volcano")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _device(model) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def bare_steps_per_s(model, batch: int, size: int, steps: int) -> float:
    """Steps/s of encode_image forward + backward to the pixels on a [batch, 3, size, size] batch (one warm-up)."""
    device = _device(model)
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(batch, 3, size, size, generator=g).to(device).requires_grad_(True)
    model.eval()

    def step() -> None:
        emb = model.encode_image(pixels)
        (grad,) = torch.autograd.grad(emb.sum(), pixels)
        pixels.grad = grad  # keep the result alive as the render loop does

    step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps / (time.perf_counter() - t0)


def render_seconds(model, prompts: list[str], size: int, steps: int, seed: int = 0) -> float:
    """Seconds for viz.imagine on the prompts as one batch (text embeddings included), after a 1-step warm-up."""
    from brivl import viz

    device = _device(model)
    opts = {"size": size, "seed": seed, "progress": False}
    viz.imagine(model, prompts, steps=1, **opts)  # warm-up: allocators, kernels, tokenizer
    _sync(device)
    t0 = time.perf_counter()
    viz.imagine(model, prompts, steps=steps, **opts)
    _sync(device)
    return time.perf_counter() - t0


def measure(model, steps: int = 16, size: int | None = None, prompts: int = 4, repeats: int = 3) -> dict:
    """Both ratios for one model in this process; returns the raw timings and the ratios.

    Each timing is the best of `repeats` interleaved runs: on a shared machine the minimum is the least noisy.
    """
    if prompts < 2:
        raise ValueError(f"prompts must be >= 2 to compare a shared batch with one prompt, got {prompts}")
    if prompts > len(PROMPTS):
        raise ValueError(f"at most {len(PROMPTS)} prompts, got {prompts}")
    size = size or model.image_size
    texts = list(PROMPTS[:prompts])
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    batch_s = single_s = float("inf")
    bare_sps = bare_one_sps = 0.0
    for _ in range(repeats):
        batch_s = min(batch_s, render_seconds(model, texts, size, steps))
        single_s = min(single_s, render_seconds(model, texts[:1], size, steps))
        bare_sps = max(bare_sps, bare_steps_per_s(model, prompts, size, steps))
        bare_one_sps = max(bare_one_sps, bare_steps_per_s(model, 1, size, steps))
    render_sps = steps / batch_s
    return {
        "model": getattr(getattr(model, "config", None), "name", type(model).__name__),
        "device": str(_device(model)), "threads": torch.get_num_threads(), "size": size, "steps": steps,
        "prompts": prompts, "repeats": repeats,
        "render_steps_per_s": render_sps, "bare_steps_per_s": bare_sps,
        "render_vs_bare": render_sps / bare_sps,
        "batch_s": batch_s, "single_s": single_s,
        "per_prompt_batched_s": batch_s / prompts, "per_prompt_alone_s": single_s,
        "batched_vs_alone_per_prompt": (batch_s / prompts) / single_s,
        # What batching can buy at most: the bare tower's own time per image in the batch / alone.
        "bare_batched_vs_alone_per_image": (1 / (bare_sps * prompts)) / (1 / bare_one_sps),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", help="anything brivl.load accepts (default: tiny)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=16, help="timed steps per measurement (default 16)")
    ap.add_argument("--size", type=int, help="image side (default: the model's input size)")
    ap.add_argument("--prompts", type=int, default=4, help="prompts in the shared batch (default 4)")
    ap.add_argument("--repeats", type=int, default=3, help="best of this many runs per timing (default 3)")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import brivl

    model = brivl.load(args.model, device=args.device)
    r = measure(model, steps=args.steps, size=args.size, prompts=args.prompts, repeats=args.repeats)
    n = r["prompts"]
    print(f"model {r['model']} on {r['device']} ({r['threads']} threads), {r['size']} px, {r['steps']} timed steps, "
          f"best of {r['repeats']}")
    rows = [(f"render loop, batch {n}", f"{r['render_steps_per_s']:.2f} steps/s"),
            (f"bare image-tower fwd+bwd, batch {n}", f"{r['bare_steps_per_s']:.2f} steps/s (the limit)"),
            ("  ratio render / bare", f"{r['render_vs_bare']:.2f}"),
            (f"time per prompt, {n} in one batch", f"{r['per_prompt_batched_s']:.3f} s"),
            ("time per prompt, alone", f"{r['per_prompt_alone_s']:.3f} s"),
            ("  ratio batched / alone", f"{r['batched_vs_alone_per_prompt']:.2f}"),
            ("  the bare tower's own ratio (the limit)", f"{r['bare_batched_vs_alone_per_image']:.2f}")]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key + ':':<{width + 1}}  {value}")
    print(json.dumps(r))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=2)


if __name__ == "__main__":
    main()

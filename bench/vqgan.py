"""How fast VQGAN inversion runs, against the limit its two frozen networks set, and how much memory it needs.

For each image size, in this one process on the same models and device:
  inversion  - seconds per step of viz.vqgan_imagine (token quantisation, decode, cutouts + kornia augmentations,
               image tower on the cutouts, spherical loss, backward to the tokens, Adam);
  bare       - seconds per step of the bare work it cannot avoid: decode the same latents, resize the image to the
               cutout size `cutn` times, image tower forward + backward to the latents;
  ratio      - inversion / bare (1.0 = the loop adds nothing to the networks' own cost);
  peak       - peak memory of each (CUDA: max allocated; CPU: peak RSS above the loaded models, in a fresh process).

Usage: python bench/vqgan.py [--model tiny] [--vqgan lite] [--sizes 128 256] [--cutn 8] [--steps 6] [--repeats 2]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import threading
import time

import torch
import torch.nn.functional as F


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _rss_mb() -> float:
    """The process's resident memory now (MB), from /proc (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _child_peak(kind: str, model_name: str, vqgan_name: str, size: int, cutn: int, cut_size: int, threads: int,
                out) -> None:
    """In a fresh process: load both models, then report the peak RSS of one short run above the loaded state (MB),
    sampled every millisecond (ru_maxrss would be the loading's own peak, often higher than the run's)."""
    torch.set_num_threads(threads)
    import brivl
    from brivl.viz.vqgan import load_vqgan

    model, vqgan = brivl.load(model_name), load_vqgan(vqgan_name)
    model.encode_text(["warm-up"])
    base = top = _rss_mb()
    done = threading.Event()

    def sample() -> None:
        nonlocal top
        while not done.wait(0.001):
            top = max(top, _rss_mb())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    (inversion_step_s if kind == "inversion" else bare_step_s)(model, vqgan, size, cutn, cut_size, 2)
    done.set()
    thread.join()
    out.put(max(top, _rss_mb()) - base)


def cpu_peak_mb(kind: str, model_name: str, vqgan_name: str, size: int, cutn: int, cut_size: int) -> float:
    """Peak RSS above the loaded models of one `kind` run ("inversion" or "bare"), measured in a fresh process:
    in this one, memory freed by earlier runs is reused and would hide the peak."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_child_peak, args=(kind, model_name, vqgan_name, size, cutn, cut_size,
                                                 torch.get_num_threads(), out))
    proc.start()
    value = out.get(timeout=1800)
    proc.join()
    return value


def _cuda_peak_mb(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")


def bare_step_s(model, vqgan, size: int, cutn: int, cut_size: int, steps: int) -> tuple[float, float]:
    """(seconds per step, peak MB) of decode + resize to cutn cutouts + image tower fwd+bwd to the latents."""
    device = vqgan.codebook.device
    f = vqgan.factor
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, vqgan.codebook.shape[0], (1, size // f, size // f), generator=g).to(device)
    z = vqgan.codebook[idx].permute(0, 3, 1, 2).clone().requires_grad_(True)

    def step() -> None:
        image = vqgan.decode(z)
        views = F.interpolate(image, size=(cut_size, cut_size), mode="bilinear", align_corners=False)
        emb = model.encode_image(views.expand(cutn, -1, -1, -1))
        (z.grad,) = torch.autograd.grad(emb.sum(), z)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step()  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - t0) / steps, _cuda_peak_mb(device)


def inversion_step_s(model, vqgan, size: int, cutn: int, cut_size: int, steps: int) -> tuple[float, float]:
    """(seconds per step, peak MB) of viz.vqgan_imagine, from the time between its first and last callback."""
    from brivl.viz.vqgan_inversion import vqgan_imagine

    device = vqgan.codebook.device
    marks: dict[int, float] = {}

    def mark(step: int, images) -> None:
        _sync(device)
        marks[step] = time.perf_counter()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    # Steps 0..steps: the callback at step 0 fires before the first update and at `steps` after the last, so the
    # span covers exactly `steps` updates and leaves out text encoding and set-up.
    vqgan_imagine(model, vqgan, "a red apple on a wooden table", steps=steps, size=size, cutn=cutn,
                  cut_size=cut_size, progress=False, callback=mark, every=steps)
    return (marks[steps] - marks[0]) / steps, _cuda_peak_mb(device)


def measure(model, vqgan, sizes: list[int], cutn: int = 8, cut_size: int | None = None, steps: int = 6,
            repeats: int = 2, names: tuple[str, str] | None = None) -> dict:
    """Per-size timings (best of `repeats`, interleaved), the ratio inversion / bare and the peak memory."""
    cut_size = cut_size or model.image_size
    model.eval()
    rows = []
    for size in sizes:
        inv, bare, inv_mb, bare_mb = float("inf"), float("inf"), 0.0, 0.0
        for _ in range(repeats):
            t, mb = inversion_step_s(model, vqgan, size, cutn, cut_size, steps)
            inv, inv_mb = min(inv, t), max(inv_mb, mb)
            t, mb = bare_step_s(model, vqgan, size, cutn, cut_size, steps)
            bare, bare_mb = min(bare, t), max(bare_mb, mb)
        if vqgan.codebook.device.type == "cpu" and names is not None:
            inv_mb = cpu_peak_mb("inversion", *names, size, cutn, cut_size)
            bare_mb = cpu_peak_mb("bare", *names, size, cutn, cut_size)
        rows.append({"size": size, "tokens": (size // vqgan.factor) ** 2, "inversion_step_s": round(inv, 4),
                     "bare_step_s": round(bare, 4), "inversion_vs_bare": round(inv / bare, 3),
                     "inversion_peak_mb": round(inv_mb, 1), "bare_peak_mb": round(bare_mb, 1)})
    device = vqgan.codebook.device
    return {"model": getattr(getattr(model, "config", None), "name", type(model).__name__),
            "vqgan": vqgan.config.name, "vqgan_factor": vqgan.factor, "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "threads": torch.get_num_threads(), "cutn": cutn, "cut_size": cut_size, "steps": steps,
            "repeats": repeats, "peak_memory": "CUDA max allocated (MB)" if device.type == "cuda" else
            "peak RSS above the loaded models, one run in a fresh process (MB)",
            "sizes": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", help="anything brivl.load accepts (default: tiny)")
    ap.add_argument("--vqgan", default="lite", help="'lite', a VQGAN folder, or a taming .ckpt (default: lite)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256], help="image sides (default 128 256)")
    ap.add_argument("--cutn", type=int, default=8, help="cutouts per step (default 8)")
    ap.add_argument("--cut-size", type=int, help="cutout side (default: the model's input size)")
    ap.add_argument("--steps", type=int, default=6, help="timed steps per measurement (default 6)")
    ap.add_argument("--repeats", type=int, default=2, help="best of this many runs per timing (default 2)")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import brivl
    from brivl.viz.vqgan import load_vqgan

    model = brivl.load(args.model, device=args.device)
    vqgan = load_vqgan(args.vqgan, device=args.device)
    r = measure(model, vqgan, args.sizes, args.cutn, args.cut_size, args.steps, args.repeats, (args.model, args.vqgan))
    print(f"model {r['model']} + VQGAN {r['vqgan']} (f{r['vqgan_factor']}) on {r['device']} ({r['threads']} threads), "
          f"{r['cutn']} cutouts of {r['cut_size']} px, {r['steps']} timed steps, best of {r['repeats']}")
    print(f"{'size':>6} {'tokens':>7} {'inversion s/step':>17} {'bare s/step':>12} {'ratio':>6} "
          f"{'inv peak MB':>12} {'bare peak MB':>13}")
    for row in r["sizes"]:
        print(f"{row['size']:>6} {row['tokens']:>7} {row['inversion_step_s']:>17.4f} {row['bare_step_s']:>12.4f} "
              f"{row['inversion_vs_bare']:>6.2f} {row['inversion_peak_mb']:>12.1f} {row['bare_peak_mb']:>13.1f}")
    print(json.dumps(r))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=2)


if __name__ == "__main__":
    main()

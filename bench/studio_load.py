"""Load test of the Imagine studio: N concurrent gradio_client clients x M Imagine requests each, against a studio
running in its own process on 127.0.0.1. Every request has its own seed; each response is checked against the same
request run alone afterwards (it must be that seed's image, not a neighbour's) and all images must differ.

Prints p50/p95 latency (submit -> final image), submit -> first streamed preview, and the error count; with --json,
writes them to a file. With --every-tab, each client instead sends one request to every tab at once (the page's
defaults or an example's input) and the per-tab latency and errors are printed. Usage:
    python bench/studio_load.py [--model brivl-lite] [--clients 8] [--requests 3] [--steps 8] [--size 64]
    python bench/studio_load.py --every-tab --clients 2 --json bench/results/studio/every_tab.json
"""
from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _run_clients(client_thread, clients: int) -> None:
    """Run client_thread(c) for every client at once and wait for all (at most 30 min)."""
    threads = [threading.Thread(target=client_thread, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=1800)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else float("nan")


def _pixels(path: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.int16)


def one_request(client, prompt: str, model: str, steps: int, size: int, seed: int) -> dict:
    """Submit one Imagine request; returns latency, time to the first preview, the PNG path and its hash."""
    t0 = time.perf_counter()
    job = client.submit(prompt, model, steps, size, seed, "fft", True, 0.05, api_name="/imagine")
    first = None
    for _ in job:  # outputs as they stream in
        if first is None:
            first = time.perf_counter() - t0
    image, status, files = job.result()
    latency = time.perf_counter() - t0
    png = next(f for f in files if f.endswith(".png"))
    meta = json.loads(Path(next(f for f in files if f.endswith(".json"))).read_text(encoding="utf-8"))
    return {"seed": seed, "latency_s": latency, "first_preview_s": first if first is not None else latency,
            "png": png, "sha256": hashlib.sha256(Path(png).read_bytes()).hexdigest(), "meta_seed": meta["seed"],
            "status": status}


def load_test(url: str, *, model: str = "brivl-lite", clients: int = 8, requests: int = 3, steps: int = 8,
              size: int = 64, prompt: str = "夕阳下的大海") -> dict:
    """Run the load and the per-seed checks; returns the numbers (and every error's text)."""
    from gradio_client import Client

    results: list[dict] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def client_thread(c: int) -> None:
        try:
            client = Client(url, verbose=False)
        except Exception as e:  # noqa: BLE001 - counted
            with lock:
                errors.append(f"client {c}: connect: {e}")
            return
        barrier.wait()  # all clients start together
        for r in range(requests):
            seed = 1000 * c + r
            try:
                out = one_request(client, prompt, model, steps, size, seed)
                with lock:
                    results.append(out)
            except Exception as e:  # noqa: BLE001 - counted
                with lock:
                    errors.append(f"client {c} seed {seed}: {type(e).__name__}: {e}")

    t0 = time.perf_counter()
    _run_clients(client_thread, clients)
    wall = time.perf_counter() - t0

    # Each response against the same seed run alone, one request at a time.
    reference = Client(url, verbose=False)
    mismatched, max_own_diff, min_other_diff = [], 0.0, float("inf")
    ref_latency = []
    refs = {}
    for out in sorted(results, key=lambda o: o["seed"]):
        alone = one_request(reference, prompt, model, steps, size, out["seed"])
        ref_latency.append(alone["latency_s"])
        refs[out["seed"]] = _pixels(alone["png"])
    for out in results:
        mine = _pixels(out["png"])
        own = np.abs(mine - refs[out["seed"]])
        others = [float(np.abs(mine - ref).mean()) for s, ref in refs.items() if s != out["seed"]]
        max_own_diff = max(max_own_diff, float(own.max()))
        min_other_diff = min([min_other_diff, *others])
        # Its own seed's image (equal up to rounding: float sums may differ by a last bit between threads), and
        # nearer to it than to any other seed's image.
        if own.max() > 2 or out["meta_seed"] != out["seed"] or any(o <= own.mean() for o in others):
            mismatched.append(out["seed"])
    latencies = [o["latency_s"] for o in results]
    firsts = [o["first_preview_s"] for o in results]
    return {
        "url": url, "model": model, "clients": clients, "requests_per_client": requests, "steps": steps,
        "size": size, "prompt": prompt, "completed": len(results), "errors": len(errors), "error_texts": errors[:10],
        "p50_s": round(percentile(latencies, 50), 3), "p95_s": round(percentile(latencies, 95), 3),
        "max_s": round(max(latencies), 3) if latencies else None,
        "first_preview_p50_s": round(percentile(firsts, 50), 3),
        "first_preview_p95_s": round(percentile(firsts, 95), 3),
        "alone_p50_s": round(statistics.median(ref_latency), 3) if ref_latency else None,
        "wall_s": round(wall, 3), "throughput_rps": round(len(results) / wall, 3) if wall else None,
        "distinct_images": len({o["sha256"] for o in results}), "not_own_image": sorted(mismatched),
        "max_abs_diff_to_own_seed_alone": max_own_diff,
        "min_mean_abs_diff_to_other_seeds": None if min_other_diff == float("inf") else round(min_other_diff, 3),
    }


def tab_requests(model: str, steps: int, size: int) -> dict[str, tuple]:
    """One request per tab with the page's defaults (an example's input where a tab needs one): api name -> args."""
    from gradio_client import handle_file

    photos = ROOT / "examples"
    mountain, sunset = handle_file(str(photos / "mountain_forest.png")), handle_file(str(photos / "sunset.png"))
    return {
        "/imagine": ("夕阳下的大海", model, steps, size, 0, "fft", True, 0.05),
        "/vqgan": ("云中的城堡", model, "lite", steps, size, 0, "z", 8, 0.1),
        "/neuron": (model, "llp", 108, "forest", 1.0, steps, size, 0, "fft", True, 0.05),
        "/top_images": (model, "llp", 108, str(photos), 8),
        "/phrases": ("运动", model, "jieba", 5000, 30, "umap", 0),
        "/classify": (mountain, "山, 森林, 城市, 海滩", "{}", model),
        "/retrieve": ("夕阳下的大海", str(photos), 8, model),
        "/patches": (sunset, "the sun", model, 0.55),
        "/compare": ("雪山下的森林", model, "tiny", steps, size, 0, "fft", True, 0.05),
    }


def every_tab(url: str, *, model: str = "brivl-lite", clients: int = 2, steps: int = 8, size: int = 64) -> dict:
    """Each of `clients` clients sends every tab's request once, all at the same time; per-tab latency and errors."""
    from gradio_client import Client

    times: dict[str, list[float]] = {}
    errors: list[str] = []
    lock = threading.Lock()

    def client_thread(c: int) -> None:
        client = Client(url, verbose=False)
        for api, args in tab_requests(model, steps, size).items():
            t0 = time.perf_counter()
            try:
                client.predict(*args, api_name=api)
                with lock:
                    times.setdefault(api, []).append(time.perf_counter() - t0)
            except Exception as e:  # noqa: BLE001 - counted
                with lock:
                    errors.append(f"client {c} {api}: {type(e).__name__}: {str(e)[:200]}")

    t0 = time.perf_counter()
    _run_clients(client_thread, clients)
    return {"url": url, "model": model, "clients": clients, "steps": steps, "size": size,
            "wall_s": round(time.perf_counter() - t0, 3), "errors": len(errors), "error_texts": errors[:10],
            "tabs": {api: {"done": len(v), "p50_s": round(percentile(v, 50), 3), "max_s": round(max(v), 3)}
                     for api, v in times.items()}}


def _print_tabs(stats: dict) -> None:
    print(json.dumps(stats, indent=2, ensure_ascii=False))
    for api, t in stats["tabs"].items():
        print(f"{api:<12} {t['done']} done  p50 {t['p50_s']:6.2f} s  max {t['max_s']:6.2f} s")
    print(f"every tab x {stats['clients']} clients ({stats['model']}, {stats['steps']} steps, {stats['size']} px): "
          f"{stats['errors']} errors, {stats['wall_s']:.1f} s in all")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="a running studio (default: start one with the model)")
    ap.add_argument("--model", default="brivl-lite")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=3)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the studio process (default 1)")
    ap.add_argument("--json", help="write the numbers here")
    ap.add_argument("--every-tab", action="store_true", help="instead: each client sends one request to every tab "
                                                             "(Imagine, VQGAN, Neurons, Phrases, Classify, Retrieve, "
                                                             "Patches, Compare) at once; per-tab latency and errors")
    args = ap.parse_args()
    if args.every_tab:
        return _every_tab_main(args)
    if args.url:
        stats = load_test(args.url, model=args.model, clients=args.clients, requests=args.requests,
                          steps=args.steps, size=args.size)
    else:
        sys.path.insert(0, str(ROOT / "tests"))
        from studio_server import studio

        with studio([args.model], threads=args.threads) as url:
            stats = load_test(url, model=args.model, clients=args.clients, requests=args.requests,
                              steps=args.steps, size=args.size)
    print(json.dumps(stats, indent=2, ensure_ascii=False))
    print(f"{stats['clients']} clients x {stats['requests_per_client']} requests ({stats['model']}, "
          f"{stats['steps']} steps, {stats['size']} px): {stats['completed']} done, {stats['errors']} errors; "
          f"latency p50 {stats['p50_s']} s, p95 {stats['p95_s']} s (alone: p50 {stats['alone_p50_s']} s); "
          f"first preview p50 {stats['first_preview_p50_s']} s; {stats['distinct_images']} distinct images; "
          f"not their own seed's image: {stats['not_own_image'] or 'none'}")
    if args.json:
        Path(args.json).write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    ok = stats["errors"] == 0 and not stats["not_own_image"] and stats["distinct_images"] == stats["completed"]
    return 0 if ok else 1


def _every_tab_main(args: argparse.Namespace) -> int:
    if args.url:
        stats = every_tab(args.url, model=args.model, clients=args.clients, steps=args.steps, size=args.size)
    else:
        sys.path.insert(0, str(ROOT / "tests"))
        from studio_server import studio

        with studio([args.model, "tiny"], threads=args.threads) as url:
            stats = every_tab(url, model=args.model, clients=args.clients, steps=args.steps, size=args.size)
    _print_tabs(stats)
    if args.json:
        Path(args.json).write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0 if stats["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

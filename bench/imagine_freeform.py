"""Free-form prompts, English and Chinese: what does the model imagine for a scene rather than one class?

Renders each prompt once with `viz.imagine` (same seed and settings for all) and writes one grid with the
ImageNet judge's top-3 under each image (EfficientNet-Lite2, as in bench/imagine_accuracy.py), plus the JSON.
The judge knows only ImageNet's 1000 classes, so read its labels as hints of what is in the picture.

Usage: python bench/imagine_freeform.py [--model brivl-lite] [--steps 128] [--size 160] [--out DIR]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

PROMPTS = (
    "a red apple on a table", "夕阳下的大海",
    "a lighthouse on a rocky coast", "雪山下的湖泊",
    "a cup of coffee and a croissant", "一碗热腾腾的面条",
    "a dog playing in the snow", "花园里的蝴蝶",
    "an old steam train crossing a bridge", "夜晚的城市街道",
)


def main() -> None:
    """Render every prompt and write the grid and JSON."""
    import brivl
    from brivl import viz
    from imagine_accuracy import Judge
    from brivl.viz.figures import save_grid, write_json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="brivl-lite")
    ap.add_argument("--steps", type=int, default=128)
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="imagine_freeform")
    args = ap.parse_args()
    model = brivl.load(args.model)
    t0 = time.perf_counter()
    out = viz.imagine(model, list(PROMPTS), steps=args.steps, size=args.size, seed=args.seed)
    render_s = time.perf_counter() - t0
    judge = Judge(2)
    probs = judge.probs(out.images)
    top = probs.topk(3, dim=-1)
    items = [{"prompt": p, "judge_top3": [judge.names[i] for i in idx.tolist()],
              "judge_probs": [round(float(v), 3) for v in val]}
             for p, idx, val in zip(PROMPTS, top.indices, top.values, strict=True)]
    folder = Path(args.out)
    captions = [", ".join(f"{n} {v:.2f}" for n, v in zip(it["judge_top3"], it["judge_probs"])) for it in items]
    save_grid(out.images, folder / "imagine_freeform.png", titles=list(PROMPTS), captions=captions, ncols=5,
              title=f"{args.model}: free-form prompts ({args.steps} steps, {args.size} px, seed {args.seed}); "
                    "under each image the ImageNet judge's top-3", wrap=30)
    write_json({"model": args.model, "steps": args.steps, "size": args.size, "seed": args.seed,
                "render_s": round(render_s, 1), "torch": torch.__version__, "items": items},
               folder / "imagine_freeform.json")
    for it in items:
        print(f"{it['prompt']}: {', '.join(it['judge_top3'])}")
    print(f"render {render_s:.0f} s; wrote {folder}/imagine_freeform.png")


if __name__ == "__main__":
    main()

"""brivl-lite quality and load time: the numbers of issue 5, printed and written to bench/results/lite.json.

    .venv/bin/python bench/lite.py [--model brivl-lite] [--crops 8] [--out bench/results/lite.json]

- teacher agreement on the held-out real photos (scikit-image, scikit-learn, matplotlib; never trained on)
  and random crops of them: % of images whose zero-shot top-1/top-5 over the 1000 ImageNet class prompts
  ("a photo of a {}.", and the recipe's 4 English label templates averaged) contains the EfficientNet-Lite0
  classifier's top-1;
- Chinese zero-shot over 50 Chinese class prompts (the names in tests/test_lite_quality.py) on freshly
  synthesised images of those classes and on the held-out photos whose teacher top-1 is one of them;
- cross-lingual Recall@1 on 200 held-out English/Chinese sentence pairs, beside the text backbone alone;
- load time of `brivl.load(model)` in a fresh process, cold (empty BRIVL_CACHE) and warm.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The recipes are the checkout's recipes/ (a wheel installs them as brivl_recipes): a bench run from the
# repository imports them by that source name, with the repository root on the path.
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def load_seconds(model: str, cache: str | None) -> float:
    """Wall time of `brivl.load(model)` in a new Python process (the import included)."""
    env = dict(os.environ, **({"BRIVL_CACHE": cache} if cache else {}))
    code = ("import time; t = time.perf_counter(); import brivl; brivl.load(%r); "
            "print(time.perf_counter() - t)" % model)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    """Measure and print every number; write them as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="brivl-lite")
    parser.add_argument("--crops", type=int, default=8)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "lite.json"))
    args = parser.parse_args()

    from lite_names import ZH_TEST_NAMES

    import brivl
    from recipes.brivl_lite.evaluate import chinese_zero_shot, cross_lingual_retrieval
    from recipes.brivl_lite.heldout import teacher_agreement
    from recipes.brivl_lite.recipe import LABEL_PROMPTS_EN

    result: dict = {"model": args.model}
    with tempfile.TemporaryDirectory() as cold:
        result["load_cold_s"] = round(load_seconds(args.model, cold), 2)
    result["load_warm_s"] = round(min(load_seconds(args.model, None) for _ in range(3)), 2)
    t = time.perf_counter()
    model = brivl.load(args.model)
    result["teacher_agreement"] = teacher_agreement(model, crops_per_photo=args.crops)
    # The recipe's English label templates averaged per class (a prompt ensemble, as CLIP-style evaluations use).
    result["teacher_agreement_ensemble"] = teacher_agreement(model, crops_per_photo=args.crops,
                                                             templates=LABEL_PROMPTS_EN)
    result["chinese_zero_shot"] = chinese_zero_shot(model, ZH_TEST_NAMES, crops_per_photo=args.crops)
    result["cross_lingual"] = cross_lingual_retrieval(model)
    result["eval_s"] = round(time.perf_counter() - t, 1)

    ta, zh, xl = result["teacher_agreement"], result["chinese_zero_shot"], result["cross_lingual"]
    print(f"model {args.model}: load cold {result['load_cold_s']:.1f} s, warm {result['load_warm_s']:.1f} s")
    print(f"teacher agreement on {ta['images']} held-out photo views: top-1 {ta['top1']:.1f}%  top-5 {ta['top5']:.1f}%")
    te = result["teacher_agreement_ensemble"]
    print(f"  with the {len(LABEL_PROMPTS_EN)} English label templates averaged: top-1 {te['top1']:.1f}%  "
          f"top-5 {te['top5']:.1f}%")
    for name, r in zh.items():
        print(f"Chinese zero-shot (50 classes), {name} ({r['images']} images): top-1 {r['top1']:.1f}%  "
              f"top-5 {r['top5']:.1f}%")
    print(f"cross-lingual R@1 on {xl['pairs']} held-out pairs: en->zh {xl['en2zh_R@1']:.1f}%  zh->en "
          f"{xl['zh2en_R@1']:.1f}%  (text backbone alone: {xl['backbone_en2zh_R@1']:.1f}% / "
          f"{xl['backbone_zh2en_R@1']:.1f}%, ratio {xl['en2zh_R@1'] / max(xl['backbone_en2zh_R@1'], 1e-9):.2f})")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, ensure_ascii=False))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

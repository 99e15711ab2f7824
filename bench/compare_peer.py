"""Side by side: brivl-lite against a transformers CLIP peer, the same texts, seed and settings; every render scored
under both models. Writes bench/results/compare-lite-vs-peer.png and .json.

    .venv/bin/python bench/compare_peer.py [--peer hf:FOLDER] [--steps 128] [--size 160]

Without --peer the peer is a random CLIP-shaped model (ViT 224 px / 32 px patches, 2 layers, 32 wide; the
toy WordPiece tokenizer of tests/hf_tiny.py) written to a temporary folder: it shows the mechanics, not a real
comparison. Point --peer at a real CLIP / Chinese-CLIP / AltCLIP / SigLIP folder for that.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # hf_tiny: the tiny random folders of the tests

import brivl  # noqa: E402
from brivl.viz import compare  # noqa: E402

TEXTS = ["a red apple", "a lighthouse on a cliff", "a goldfish"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--peer", help="hf:FOLDER of a real peer (default: a random CLIP written to a temporary folder)")
    p.add_argument("--steps", type=int, default=128)
    p.add_argument("--size", type=int, default=None, help="image side (default: 160, or the smaller model input)")
    p.add_argument("--out", default=str(ROOT / "bench/results/compare-lite-vs-peer.png"))
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        peer = args.peer
        if peer is None:
            import hf_tiny

            peer = f"hf:{hf_tiny.make_folder(Path(tmp), 'clip', image=224, patch=32)}"
        models = [brivl.load("brivl-lite"), brivl.load(peer)]
        names = ["brivl-lite", "random CLIP (tiny-clip)" if args.peer is None else args.peer]
        result = compare.compare_imagine(models, names, TEXTS, steps=args.steps, size=args.size,
                                         progress=False)
    png, meta = compare.write(result, args.out)
    print(f"wrote {png} and {meta.name}")
    for m, name in enumerate(names):
        for t, text in enumerate(TEXTS):
            cells = "  ".join(f"{j}: {float(result.scores[m, k, t]):+.4f} (margin {float(result.margin[m, k, t]):+.4f})"
                              for k, j in enumerate(names))
            print(f"{name} rendered {text!r}: {cells}")
    print("grey image:", {n: [round(float(v), 4) for v in result.baseline[k]] for k, n in enumerate(names)})
    return 0


if __name__ == "__main__":
    sys.exit(main())

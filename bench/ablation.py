"""The paper's ablation (Fig. S2a) at toy scale: MoCo vs in-batch negatives vs no self-attention.

Same data, same steps, same seed; retrieval Recall@1/5/10 both ways and Recall@SUM on held-out pairs
with distinct captions. Prints a markdown table (and writes it to bench/results/ablation.md).
Usage: python bench/ablation.py [--steps 1000] [--batch 16] [--train-pairs 2048]
"""
from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import brivl
from brivl.data import read_pairs
from brivl.eval import embed_pairs, retrieval_metrics
from brivl.toydata import make_toy_pairs
from brivl.train import TrainConfig, train

# Queue sizes are part of the comparison: from random initialisation at toy scale, a long queue of stale
# keys lets MoCo settle in a collapsed state (every embedding alike), a short one trains.
VARIANTS = {
    "BriVL (MoCo, with SA), queue 64": {"loss": "moco", "queue": 64},
    "BriVL (MoCo, with SA), queue 512": {"loss": "moco", "queue": 512},
    "BriVL w/ in-batch (SimCLR-style)": {"loss": "inbatch"},
    "BriVL w/o SA (MoCo, queue 64)": {"loss": "moco", "queue": 64, "no_sa": True},
}


def main() -> None:
    """Train each variant on the same toy data and print the retrieval table."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--train-pairs", type=int, default=2048)
    ap.add_argument("--test-pairs", type=int, default=200)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "ablation.md"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="brivl-ablation-"))
    train_manifest = make_toy_pairs(work / "train", args.train_pairs, size=64, seed=1)
    test_pairs = read_pairs(make_toy_pairs(work / "test", args.test_pairs, size=64, seed=2, unique=True))
    rows = []
    for name, spec in VARIANTS.items():
        overrides = {"image": {"image_size": 64}, "text": {"max_len": 48}}
        if spec.get("no_sa"):
            overrides["image"]["att_layers"] = 0
            overrides["text"]["att_layers"] = 0
        cfg = TrainConfig.from_dict({
            "data": str(train_manifest), "output": str(work / f"run{len(rows)}"),
            "model": "tiny", "model_overrides": overrides, "loss": spec["loss"], "steps": args.steps,
            "batch_size": args.batch, "queue_size": spec.get("queue", 64), "lr": args.lr, "warmup_steps": 20,
            "save_every": args.steps, "seed": 0})
        t0 = time.perf_counter()
        last = train(cfg, progress=True)
        minutes = (time.perf_counter() - t0) / 60
        model = brivl.load(Path(cfg.output) / "checkpoints" / f"step-{args.steps:07d}" / "model")
        r = retrieval_metrics(model, test_pairs)
        img, txt = embed_pairs(model, test_pairs)
        spread = (img - img.mean(0)).norm(dim=1).mean().item()  # ~0 when every image embeds alike (collapse)
        negatives = spec["queue"] - 1 if spec["loss"] == "moco" else args.batch - 1
        rows.append((name, negatives, last["loss"], minutes, spread, r))
    header = ("| method | negatives | final loss | train min | image spread | i2t R@1 | R@5 | R@10 | t2i R@1 | R@5 "
              "| R@10 | R@SUM |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    lines = [f"Toy captioned shapes: {args.train_pairs} training pairs, {args.test_pairs} held-out pairs with distinct "
             f"captions; tiny BriVL at 64 px; {args.steps} steps of batch {args.batch}, lr {args.lr}, same seed.",
             "", header]
    for name, neg, loss, minutes, spread, r in rows:
        lines.append(f"| {name} | {neg} | {loss:.3f} | {minutes:.1f} | {spread:.3f} | " + " | ".join(
            f"{r[k]:.1f}" for k in ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "R@SUM"))
            + " |")
    table = "\n".join(lines)
    print(table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(table + "\n")


if __name__ == "__main__":
    main()

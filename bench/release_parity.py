"""Both official releases at full size, end to end: convert -> load -> embed, against the release's forward.

Builds the released layout (EfficientNet-B5, 2048-d, BERT-base with 21,128 embedding rows) with seeded random
weights, writes it as the release does ({'learnable': ...}), writes a vocab.txt laid out like
hfl/chinese-roberta-wwm-ext's ([PAD] 0, [unused1-99], [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103, characters),
runs `brivl convert` for each release and compares the loaded model with the release's forward written out in
tests/release_reference.py (token ids computed by hand from the vocab's line numbers):
  text      padded to 80, no attention mask, one text longer than 80 tokens;
  brivl-1.0 380 px, 36 / 5 detector boxes per image (padded and masked);
  brivl-nmi 456 px, the 6x6 grid plus the whole image.
It also shows what the old tokenizer path (BertTokenizerFast(vocab_file=...)) gave. About 2 GB of memory and
1-3 minutes on 2 CPU cores.

Usage: python bench/release_parity.py [--work DIR]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import release_reference as R  # noqa: E402

import brivl  # noqa: E402
from brivl.cli import main  # noqa: E402
from brivl.config import preset  # noqa: E402
from brivl.model.brivl import BriVL  # noqa: E402

TEXTS = ["夕阳下的大海", "中国传统寺庙", "山" * 100]  # the last is cut to [CLS] + 78 + [SEP]


def write_vocab(path: Path, rows: int = 21128) -> dict[str, int]:
    """A vocab.txt with the hfl layout, filled with CJK characters up to `rows` lines."""
    lines = ["[PAD]"] + [f"[unused{i}]" for i in range(1, 100)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    lines += [chr(0x4E00 + i) for i in range(rows - len(lines))]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {t: i for i, t in enumerate(lines)}


def hand_ids(vocab: dict[str, int], texts: list[str], max_len: int = 80) -> torch.Tensor:
    """[CLS] + one id per character (its line) + [SEP], cut to max_len, padded with [PAD] = 0."""
    rows = []
    for t in texts:
        ids = [101] + [vocab.get(c, 100) for c in t][:max_len - 2] + [102]
        rows.append(ids + [0] * (max_len - len(ids)))
    return torch.tensor(rows)


def boxes(k: int, w: int, h: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    xs = torch.randint(0, w + 1, (k, 2), generator=g).sort(dim=1).values
    ys = torch.randint(0, h + 1, (k, 2), generator=g).sort(dim=1).values
    return [[int(xs[i, 0]), int(ys[i, 0]), int(xs[i, 1]), int(ys[i, 1])] for i in range(k)]


def report(label: str, ours: torch.Tensor, ref: torch.Tensor) -> None:
    cos = F.cosine_similarity(ours, ref, dim=-1)
    print(f"{label:<40} max |diff| {(ours - ref).abs().max().item():.2e}   min cosine {cos.min().item():.6f}")


@torch.no_grad()
def run(work: Path) -> None:
    t0 = time.perf_counter()
    torch.manual_seed(0)
    reference = BriVL(preset("brivl-1.0")).eval()
    reference.config.text.use_attention_mask = False  # what the release does
    vocab = write_vocab(work / "vocab.txt")
    pth = work / "release.pth"
    torch.save({"learnable": reference.state_dict()}, pth)
    size = pth.stat().st_size / 2**30
    print(f"built and wrote the release layout ({size:.2f} GiB) in {time.perf_counter() - t0:.0f} s")

    ids = hand_ids(vocab, TEXTS)
    ref_text = R.text_tower(reference, ids)
    pixels = torch.rand(2, 3, 298, 448, generator=torch.Generator().manual_seed(1))  # the size of a release example
    per_image = [boxes(36, 448, 298, 2), boxes(5, 448, 298, 3)]
    for release in ("brivl-1.0", "brivl-nmi"):
        out = work / release
        assert main(["convert", str(pth), str(out), "--preset", release, "--tokenizer", str(work / "vocab.txt")]) == 0
        model = brivl.load(out)
        size = model.image_size
        assert torch.equal(model.tokenize(TEXTS)["input_ids"], ids), "token ids differ from the hand-computed ones"
        report(f"{release} text tower", model.encode_text(TEXTS), ref_text)
        resized = F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False)
        if release == "brivl-1.0":
            packed, valid = R.release_boxes(per_image, [448, 448], [298, 298], size)
            report(f"{release} image tower, {size} px, boxes", model.encode_image(pixels, boxes=per_image),
                   R.image_tower(reference, resized, packed, valid, size))
        else:
            grid = model.imgencoder.boxes[None].expand(2, -1, -1)
            report(f"{release} image tower, {size} px, grid", model.encode_image(pixels),
                   R.image_tower(reference, resized, grid, torch.tensor([37, 37]), size))
        del model
    from transformers import BertTokenizerFast

    old = BertTokenizerFast(vocab_file=str(work / "vocab.txt"))  # the path brivl/tokenizer.py took before
    old_ids = old(TEXTS, padding="max_length", truncation=True, max_length=80, return_tensors="pt")["input_ids"]
    report(f"old tokenizer ({len(old)} entries) text tower", R.text_tower(reference, old_ids), ref_text)
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", help="folder for the checkpoint and converted models (default: a temporary one)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message=r".*longer than 80 tokens were truncated")  # text 3, on purpose
    if args.work:
        Path(args.work).mkdir(parents=True, exist_ok=True)
        run(Path(args.work))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            run(Path(tmp))

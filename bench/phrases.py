"""Phrase-index throughput and query latency, against baselines run in this same process on the same data.

  1. index build phrases/s (viz.phrases.build_index: length-sorted batches, float16 shards, atomic writes) with the
     model's text backbone alone (TextBackboneModel: mean-pooled last hidden states) / phrases/s of
     sentence-transformers' `encode` on the same backbone (a SentenceTransformer built from a local folder holding
     that backbone and tokenizer, mean pooling; its encode sorts by length too). Above 1: our build is faster.
     The two give the same vectors up to our float16 storage (checked). Also the full model's build (backbone +
     BriVL heads), for scale.
  2. top-k query latency of viz.phrases.topk_cosine (float16 products in chunks, candidates re-scored in float32) /
     latency of a bare matrix-vector product with top-k over the same float16 matrix (one call, no chunks).
     Below 1: ours is faster. A float32 copy of the matrix is timed too, for reference; and both again on a random
     matrix with jieba's 349,045 rows, so a small --limit still shows the latency at the paper's scale.

Usage: python bench/phrases.py [--model tiny|brivl-lite|brivl-lite:random-heads|FOLDER] [--limit 2000] [--full]
       [--batch-size 256] [--k 30] [--repeats 20] [--query-rows 349045] [--device cpu|cuda]
--full embeds all of jieba's 349,045 phrases and reports the time and the index size.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def sentence_transformer(model, folder: Path, device: str):
    """A SentenceTransformer over the BriVL's own text backbone and tokenizer, saved to a local folder (no hub)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    model.textencoder.backbone.bert.save_pretrained(folder)
    model.tokenizer.save_pretrained(folder)
    tr = Transformer(str(folder), max_seq_length=model.config.text.max_len)
    return SentenceTransformer(modules=[tr, Pooling(tr.get_embedding_dimension(), pooling_mode="mean")],
                               device=device)


def load_model(name: str, device: str):
    """A model by name; 'brivl-lite:random-heads' is brivl-lite's layout with its package backbones (the real
    multilingual-e5-small) and seeded random heads, for timing when the trained heads are not built yet."""
    import brivl

    if name == "brivl-lite:random-heads":
        from brivl.lite.assemble import with_package_backbones

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = with_package_backbones(brivl.BriVL(brivl.preset("brivl-lite")))
        return model.to(device).eval()
    return brivl.load(name, device=device)


def time_build(model, phrases, folder: Path, batch_size: int) -> tuple[float, object]:
    from brivl.viz.phrases import build_index

    t0 = time.perf_counter()
    index = build_index(model, folder, phrases, batch_size=batch_size, progress=False)
    return time.perf_counter() - t0, index


def time_st(st, texts, batch_size: int, prefix: str) -> tuple[float, torch.Tensor]:
    t0 = time.perf_counter()
    emb = st.encode(texts, batch_size=batch_size, convert_to_tensor=True, normalize_embeddings=True,
                    prompt=prefix or None, show_progress_bar=False)
    return time.perf_counter() - t0, emb


def time_query(fn, repeats: int, device: torch.device) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny", help="a model brivl.load takes, or brivl-lite:random-heads (the real "
                                                   "e5 backbone with random heads)")
    ap.add_argument("--limit", type=int, default=2000, help="phrases to embed (default 2000)")
    ap.add_argument("--full", action="store_true", help="all 349,045 jieba phrases (overrides --limit)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--k", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--query-rows", type=int, default=349_045,
                    help="rows of the random matrix the query latency is also timed on (default: jieba's size)")
    args = ap.parse_args(argv)

    from brivl.eval import TextBackboneModel
    from brivl.viz.phrases import model_fingerprint, read_phrases, topk_cosine

    device = torch.device(args.device)
    model = load_model(args.model, args.device)
    plist = read_phrases("jieba", None if args.full else args.limit)
    n = len(plist.phrases)
    backbone = TextBackboneModel(model)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        st = sentence_transformer(model, tmp / "st", args.device)
        warm = plist.phrases[:min(64, n)]
        with torch.inference_mode():  # warm both paths (first-call allocations, kernel selection)
            backbone.encode_text(warm)
            st.encode(warm, batch_size=args.batch_size, show_progress_bar=False)
        # The build hashes the text tower's weights once per model object (the index's staleness check): a fixed
        # cost that a small --limit magnifies. Timed on a twin wrapper, so the build below still pays it.
        t0 = time.perf_counter()
        model_fingerprint(TextBackboneModel(model))
        t_fp = time.perf_counter() - t0
        t_ours, index_bb = time_build(backbone, plist, tmp / "idx-backbone", args.batch_size)
        t_st, st_emb = time_st(st, plist.phrases, args.batch_size, model.config.text.prefix)
        diff = (index_bb.embeddings.float() - st_emb.float().cpu()).abs().max().item()
        t_full, index = time_build(model, plist, tmp / "idx-model", args.batch_size)
        size = (tmp / "idx-model" / "embeddings.safetensors").stat().st_size

        matrix = index.embeddings.to(device)
        q = model.encode_text(["运动"]).detach().float().to(device)[0]
        q16, m32 = q.half(), matrix.float()
        ours = time_query(lambda: topk_cosine(matrix, q, args.k), args.repeats, device)
        bare = time_query(lambda: torch.mv(matrix, q16).topk(args.k), args.repeats, device)
        bare32 = time_query(lambda: torch.mv(m32, q).topk(args.k), args.repeats, device)
        # the same top-k scores as an exact float32 search (ids may differ only among tied scores)
        same = torch.allclose(topk_cosine(matrix, q, args.k)[0][0], torch.mv(m32, q).topk(args.k).values.cpu(),
                              atol=1e-6)

    # the same at the full jieba size, on a random unit matrix of the model's width (so --limit runs show it too)
    g = torch.Generator().manual_seed(0)
    big = torch.nn.functional.normalize(torch.randn(args.query_rows, matrix.shape[1], generator=g), dim=1)
    big = big.half().to(device)
    ours_big = time_query(lambda: topk_cosine(big, q, args.k), max(3, args.repeats // 4), device)
    bare_big = time_query(lambda: torch.mv(big, q16).topk(args.k), max(3, args.repeats // 4), device)
    big32 = big.float()
    bare32_big = time_query(lambda: torch.mv(big32, q).topk(args.k), max(3, args.repeats // 4), device)
    ids_big = topk_cosine(big, q, args.k)[1][0]
    same_big = torch.equal(ids_big, torch.mv(big32, q).topk(args.k).indices.cpu())
    del big32

    result = {
        "model": args.model, "device": str(device), "phrases": n, "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(),
        "build_backbone_phrases_per_s": round(n / t_ours, 1), "st_encode_phrases_per_s": round(n / t_st, 1),
        "build_vs_st_ratio": round(t_st / t_ours, 3), "max_abs_diff_vs_st": diff,
        "fingerprint_s": round(t_fp, 2), "build_vs_st_ratio_without_fingerprint": round(t_st / (t_ours - t_fp), 3),
        "build_full_model_phrases_per_s": round(n / t_full, 1), "build_full_model_s": round(t_full, 2),
        "index_bytes": size, "index_mib": round(size / 2**20, 2),
        "query_topk_ms": round(ours * 1e3, 3), "bare_mv_fp16_topk_ms": round(bare * 1e3, 3),
        "bare_mv_fp32_topk_ms": round(bare32 * 1e3, 3), "query_vs_bare_ratio": round(ours / bare, 3),
        "query_vs_bare_fp32_ratio": round(ours / bare32, 3), "same_topk_scores_as_fp32": same,
        "synthetic_rows": args.query_rows, "synthetic_query_topk_ms": round(ours_big * 1e3, 3),
        "synthetic_bare_mv_fp16_topk_ms": round(bare_big * 1e3, 3),
        "synthetic_query_vs_bare_ratio": round(ours_big / bare_big, 3),
        "synthetic_bare_mv_fp32_topk_ms": round(bare32_big * 1e3, 3),
        "synthetic_query_vs_bare_fp32_ratio": round(ours_big / bare32_big, 3),
        "synthetic_same_top_k_ids_as_fp32": same_big,
    }
    print(f"{n:,} phrases on {args.model} ({device}, {torch.get_num_threads()} threads)")
    print(f"  index build, backbone alone   {result['build_backbone_phrases_per_s']:>10,.0f} phrases/s")
    print(f"  sentence-transformers encode  {result['st_encode_phrases_per_s']:>10,.0f} phrases/s   "
          f"ratio (ours/ST speed) {result['build_vs_st_ratio']:.2f}   max |diff| {diff:.1e}")
    print(f"    of which the weights fingerprint {t_fp:.2f} s (once per build); without it the ratio is "
          f"{result['build_vs_st_ratio_without_fingerprint']:.2f}")
    print(f"  index build, full model       {result['build_full_model_phrases_per_s']:>10,.0f} phrases/s   "
          f"{t_full:.1f} s, index {result['index_mib']:.2f} MiB")
    print(f"  top-{args.k} query {result['query_topk_ms']:.3f} ms vs bare fp16 mat-vec+topk "
          f"{result['bare_mv_fp16_topk_ms']:.3f} ms (ratio {result['query_vs_bare_ratio']:.2f}), fp32 "
          f"{result['bare_mv_fp32_topk_ms']:.3f} ms (ratio {result['query_vs_bare_fp32_ratio']:.2f})")
    print(f"  at {args.query_rows:,} rows (random unit fp16 matrix): top-{args.k} query "
          f"{result['synthetic_query_topk_ms']:.2f} ms vs bare fp16 mat-vec+topk "
          f"{result['synthetic_bare_mv_fp16_topk_ms']:.2f} ms (ratio {result['synthetic_query_vs_bare_ratio']:.2f}), "
          f"fp32 {result['synthetic_bare_mv_fp32_topk_ms']:.2f} ms (ratio "
          f"{result['synthetic_query_vs_bare_fp32_ratio']:.2f}); same top-{args.k} as fp32: {same_big}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

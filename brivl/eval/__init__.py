"""Evaluation: cross-modal retrieval (Recall@K, Recall@SUM) and zero-shot classification."""
from .retrieval import embed_pairs, recall_at_k, retrieval_metrics
from .zeroshot import DEFAULT_TEMPLATES, class_embeddings, topk_hits, zero_shot_logits

__all__ = ["DEFAULT_TEMPLATES", "class_embeddings", "embed_pairs", "recall_at_k", "retrieval_metrics",
           "topk_hits", "zero_shot_logits"]

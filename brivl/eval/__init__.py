"""Evaluation: cross-modal retrieval (Recall@K, Recall@SUM); zero-shot classification comes next."""
from .retrieval import embed_pairs, recall_at_k, retrieval_metrics

__all__ = ["embed_pairs", "recall_at_k", "retrieval_metrics"]

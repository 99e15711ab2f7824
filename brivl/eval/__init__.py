"""Evaluation: cross-modal retrieval (Recall@K, Recall@SUM), zero-shot image classification with the paper's
unseen/seen split protocol, zero-shot text classification; results as JSON and markdown tables.

May import the rest of the core; talks to models only through brivl.twotower's protocols."""
from .backbone import TextBackboneModel
from .datasets import (ClassFolders, LabelledTexts, RetrievalSet, read_class_folders, read_labelled_texts,
                       read_retrieval_set)
from .protocol import DEFAULT_SPLITS, Ratio, SplitError, parse_ratio, seen_classes, unseen_splits
from .retrieval import embed_pairs, recall_at_k, recall_at_k_multi, retrieval_metrics
from .suite import (PAPER_TEMPLATES, markdown_retrieval, markdown_textcls, markdown_zeroshot, retrieval,
                    text_classification, zero_shot_classification)
from .zeroshot import DEFAULT_TEMPLATES, class_embeddings, topk_hits, zero_shot_logits

__all__ = ["DEFAULT_SPLITS", "DEFAULT_TEMPLATES", "PAPER_TEMPLATES", "ClassFolders", "LabelledTexts", "Ratio",
           "RetrievalSet", "SplitError", "TextBackboneModel", "class_embeddings", "embed_pairs", "markdown_retrieval",
           "markdown_textcls", "markdown_zeroshot", "parse_ratio", "read_class_folders", "read_labelled_texts",
           "read_retrieval_set", "recall_at_k", "recall_at_k_multi", "retrieval", "retrieval_metrics",
           "seen_classes", "text_classification", "topk_hits", "unseen_splits", "zero_shot_classification",
           "zero_shot_logits"]

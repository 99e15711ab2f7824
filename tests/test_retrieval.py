"""Recall@K against hand-counted ranks."""
import pytest
import torch

from brivl.eval import recall_at_k


def test_recall_counts_the_rank_of_the_true_partner():
    sim = torch.tensor([[0.9, 0.1, 0.0],   # image 0: its text ranks 1st
                        [0.8, 0.5, 0.7],   # image 1: ranks 3rd
                        [0.1, 0.6, 0.4]])  # image 2: ranks 2nd
    r = recall_at_k(sim, ks=(1, 2))
    assert r["i2t_R@1"] == pytest.approx(100 / 3) and r["i2t_R@2"] == pytest.approx(200 / 3)
    # texts: column 0 -> image 0 first; column 1 -> image 2 beats image 1; column 2 -> image 1 beats image 2
    assert r["t2i_R@1"] == pytest.approx(100 / 3) and r["t2i_R@2"] == pytest.approx(100.0)
    assert r["R@SUM"] == pytest.approx(100 / 3 + 200 / 3 + 100 / 3 + 100)


def test_perfect_and_reversed_retrieval():
    assert recall_at_k(torch.eye(20))["R@SUM"] == pytest.approx(600)
    worst = recall_at_k(-torch.eye(20), ks=(1, 5, 10))
    assert worst["i2t_R@10"] == 0 and worst["t2i_R@1"] == 0
    with pytest.raises(ValueError, match="square"):
        recall_at_k(torch.zeros(3, 4))


def test_topk_hits_counts_ranks():
    from brivl.eval import topk_hits

    logits = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.3, 0.1], [0.0, 0.4, 0.3]])
    hits = topk_hits(logits, torch.tensor([0, 0, 2]), ks=(1, 2))
    assert hits == {"top1": pytest.approx(100 / 3), "top2": pytest.approx(100.0)}


def test_zero_shot_on_tiny_prefers_the_matching_prompt_average(tiny):
    from brivl.eval import class_embeddings, zero_shot_logits

    emb = class_embeddings(tiny, ["cat", "dog"], templates=("a {}", "the {}"))
    manual = torch.nn.functional.normalize(tiny.encode_text(["a cat", "a dog"]) + tiny.encode_text(["the cat", "the dog"]),
                                           dim=-1)
    assert torch.allclose(emb, manual, atol=1e-6)
    logits = zero_shot_logits(tiny, torch.rand(3, 3, 64, 64), emb)
    assert logits.shape == (3, 2) and logits.abs().max() <= 1 + 1e-6

"""brivl-lite imagines what it is told: an independent ImageNet classifier recognises a render of a class prompt.

A small, fast version of bench/imagine_accuracy.py: the judge is EfficientNet-Lite2 (brivl-lite's image backbone
is Lite0), and the render must raise the judge's probability of the prompt's class far above its value on the
starting noise, in English and in Chinese.
"""
import sys
from pathlib import Path

import pytest
import torch

import brivl
from brivl import viz

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from imagine_accuracy import Judge, concept_indices  # noqa: E402

pytestmark = pytest.mark.slow

# (prompt, ImageNet class): concepts whose renders bench/imagine_accuracy.py found recognisable at full settings
# (judge probability 0.88-0.96 at 128 steps, 160 px). The first set (goldfish, 草莓, volcano, 柠檬) held a concept the
# bench misses (柠檬, rank 35): a change of the heads by 6e-6 moved it from x5.6 to x1.8 and CI failed.
PROMPTS = (("a starfish", "starfish"), ("茶壶", "teapot"), ("a jellyfish", "jellyfish"), ("城堡", "castle"))


@pytest.fixture(scope="module")
def lite():
    return brivl.load("brivl-lite")


def test_renders_of_class_prompts_are_recognised_by_an_independent_judge(lite):
    targets = concept_indices(PROMPTS)
    out = viz.imagine(lite, [p for p, _ in PROMPTS], steps=32, size=128, seed=0, progress=False)
    start = viz.param.image(len(PROMPTS), 128, "fft", True, seed=0)().detach()
    judge = Judge(2)
    probs, base = judge.probs(out.images), judge.probs(start)
    rows = torch.arange(len(PROMPTS))
    p, p0 = probs[rows, targets], base[rows, targets]
    ranks = (probs > p[:, None]).sum(1) + 1
    # Noise gives each class ~1/1000 (rank ~500). Measured on the shipped heads at these settings (32 steps, 128 px):
    # probabilities 0.79, 0.17, 0.66, 0.73 = x2431, x230, x916, x2219 the noise's, every one the judge's top-1.
    assert (p > 30 * p0).all(), (p, p0)
    assert int((p > 100 * p0).sum()) >= 3, (p, p0)
    assert (ranks <= 5).all(), ranks

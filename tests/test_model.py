"""The BriVL module: shapes, norms, masking, the TwoTower protocol and the release-parity switch."""
import copy

import torch
import torch.nn.functional as F

import brivl
from brivl.model.blocks import masked_mean, self_attention_block
from brivl.model.brivl import BriVL


def test_tiny_is_a_two_tower_model(tiny):
    assert isinstance(tiny, brivl.TwoTower)
    assert tiny.embed_dim == 32 and tiny.image_size == 128
    assert not tiny.training


def test_tiny_weights_are_seeded():
    a, b = brivl.load("tiny").state_dict(), brivl.load("tiny").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_masked_mean_ignores_padding():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 4)
    pad = torch.tensor([[False, False, True, True, True], [False, False, False, False, True]])
    before = masked_mean(x, pad)
    x2 = x.clone()
    x2[pad] = 1e6
    assert torch.allclose(masked_mean(x2, pad), before)
    assert torch.allclose(before[0], x[0, :2].mean(0)) and torch.allclose(before[1], x[1, :4].mean(0))
    assert torch.allclose(masked_mean(x, None), x.mean(1))


def test_self_attention_with_mask_ignores_padded_inputs():
    torch.manual_seed(0)
    block = self_attention_block(8, 2, 2, 16, 0.1).eval()
    x = torch.randn(1, 6, 8)
    pad = torch.tensor([[False, False, False, False, True, True]])
    x2 = x.clone()
    x2[0, 4:] = torch.randn(2, 8) * 10
    with torch.no_grad():
        a = masked_mean(block(x, src_key_padding_mask=pad), pad)
        b = masked_mean(block(x2, src_key_padding_mask=pad), pad)
        c = masked_mean(block(x2), None)
    assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(a, c, atol=1e-3)


def test_embeddings_are_unit_vectors_of_the_joint_dim(tiny):
    with torch.no_grad():
        t = tiny.encode_text(["a photo of a cat", "mountains with forests", "x"])
        i = tiny.encode_image(torch.rand(2, 3, 90, 170))
    assert t.shape == (3, 32) and i.shape == (2, 32)
    assert torch.allclose(t.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(i.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_text_embedding_does_not_depend_on_batch_padding(tiny):
    with torch.no_grad():
        alone = tiny.encode_text(["a cat"])
        batched = tiny.encode_text(["a cat", "a longer one about a dog"])
    assert torch.allclose(alone[0], batched[0], atol=1e-5)


def _with_text_mask(model: BriVL, use_mask: bool, max_len: int) -> BriVL:
    cfg = copy.deepcopy(model.config)
    cfg.text.use_attention_mask, cfg.text.max_len = use_mask, max_len
    other = BriVL(cfg)
    other.load_state_dict(model.state_dict())
    return other.eval()


def test_release_mode_attends_to_padding_and_default_does_not(tiny):
    texts = ["a cat on a mat"]
    with torch.no_grad():
        masked = [_with_text_mask(tiny, True, n).encode_text(texts) for n in (20, 32)]
        release = [_with_text_mask(tiny, False, n).encode_text(texts) for n in (20, 32)]
    assert torch.allclose(masked[0], masked[1], atol=1e-5)
    # The release pads to max_len and lets the backbone see the padding: the result moves with max_len.
    assert (release[0] - release[1]).abs().max() > 1e-4
    assert (release[1] - masked[1]).abs().max() > 1e-4


def test_release_mode_pads_to_max_len(tiny):
    release = _with_text_mask(tiny, False, 24)
    assert release.tokenize(["a cat"])["input_ids"].shape == (1, 24)
    # With the mask on, padding goes only to the longest text: [CLS] a c ##a ##t [SEP].
    assert tiny.tokenize(["a cat"])["input_ids"].shape == (1, 6)


def test_tokens_are_l2_normalised_before_self_attention(tiny):
    enc = tiny.tokenize(["hello world"])
    with torch.no_grad():
        tokens = tiny.textencoder.tokens(**enc)
    assert torch.allclose(tokens.norm(dim=-1), torch.ones(tokens.shape[:2]), atol=1e-5)


def test_image_batch_elements_are_independent_and_any_size_works(tiny):
    torch.manual_seed(3)
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        both = tiny.encode_image(x)
        one = tiny.encode_image(x[1:])
        big = tiny.encode_image(F.interpolate(x[:1], size=(256, 256), mode="nearest"))
    assert torch.allclose(both[1], one[0], atol=1e-5)
    # nearest x2 then the model's bilinear /2 resize is not the identity, but stays close
    assert F.cosine_similarity(big, both[:1]).item() > 0.9


def test_image_tower_is_differentiable_in_pixels(tiny):
    x = torch.rand(1, 3, 64, 64, requires_grad=True)
    text = tiny.encode_text(["a red apple"]).detach()
    (tiny.encode_image(x) @ text.T).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_llp_layer_sees_the_map_that_mspp_pools(tiny):
    seen = {}
    handle = tiny.feature_layers()["llp"].register_forward_hook(lambda m, i, o: seen.setdefault("llp", o))
    try:
        x = torch.rand(1, 3, 128, 128)
        with torch.no_grad():
            tiny.encode_image(x)
            direct = tiny.imgencoder.backbone.forward_features(tiny.imgencoder.preprocess(x))
    finally:
        handle.remove()
    assert seen["llp"].shape == (1, 256, 4, 4)
    assert torch.equal(seen["llp"], direct)
    assert {"llp", "block0"} <= set(tiny.feature_layers())


def test_patch_embeddings_are_37_unit_vectors_whose_mean_gives_the_image_embedding(tiny):
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        patches = tiny.patch_embeddings(x)
        attended = tiny.imgencoder.attend(x)
        rebuilt = F.normalize(tiny.imgencoder.learnable["imgFC"](attended.mean(1)), dim=-1)
        image = tiny.encode_image(x)
    assert patches.shape == (2, 37, 32)
    assert torch.allclose(patches.norm(dim=-1), torch.ones(2, 37), atol=1e-5)
    assert torch.allclose(rebuilt, image, atol=1e-6)
    boxes = tiny.patch_boxes()
    assert boxes.shape == (37, 4) and boxes[36].tolist() == [0, 0, 1, 1]

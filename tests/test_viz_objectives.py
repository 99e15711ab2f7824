"""Objectives: values against hand computations, composition (values and gradients), hooks, per-row targets."""
import pytest
import torch
import torch.nn.functional as F

from brivl.viz import objectives as O

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _images(n=2, size=128, seed=0):  # the tiny model's own size: no resize
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _hook_count(model):
    return sum(len(m._forward_hooks) for m in model.modules())


def _llp(model, images):
    """The llp activation of images, hooked by hand (independently of viz)."""
    out = {}
    h = model.feature_layers()["llp"].register_forward_hook(lambda m, i, o: out.setdefault("a", o))
    try:
        with torch.no_grad():
            model.encode_image(images)
    finally:
        h.remove()
    return out["a"]


def test_composed_gradient_is_the_sum_of_the_parts(tiny):
    x = _images().requires_grad_(True)
    a, b = O.text_match("forest"), O.channel("llp", 108)
    with O.capture_layers(tiny, ["llp"]) as cap:
        ctx = O.Context(tiny, x, capture=cap)  # one forward pass shared by every objective below

        def grad(objective):
            return torch.autograd.grad(objective(ctx).sum(), x, retain_graph=True)[0]

        ga, gb = grad(a), grad(b)
        assert ga.abs().sum() > 0 and gb.abs().sum() > 0
        assert torch.allclose(grad(a + 2 * b), ga + 2 * gb, rtol=1e-4, atol=1e-9)
        assert torch.allclose(grad(a - b / 4), ga - gb / 4, rtol=1e-4, atol=1e-9)
        assert torch.allclose(grad(-a), -ga)


def test_composed_values_follow_the_arithmetic(tiny):
    a, b = O.text_match("forest"), O.channel("llp", 3)
    with torch.no_grad(), O.capture_layers(tiny, ["llp"]) as cap:
        ctx = O.Context(tiny, _images(), capture=cap)
        va, vb = a(ctx), b(ctx)
        cases = {
            "a + b": (a + b, va + vb), "a - b": (a - b, va - vb), "3 * a": (3 * a, 3 * va), "a * 3": (a * 3, 3 * va),
            "a / 2": (a / 2, va / 2), "-a": (-a, -va), "a + 1": (a + 1, va + 1), "1 - a": (1 - a, 1 - va),
            "sum": (sum([a, b, a]), 2 * va + vb),
        }
        for name, (obj, expected) in cases.items():
            assert torch.allclose(obj(ctx), expected, atol=1e-6), name
    assert "text_match" in (a + 2 * b).name and "channel(llp:3)" in (a + 2 * b).name
    # evaluate() (hooks set up and taken down per call) gives the same values.
    assert torch.allclose(O.evaluate(a - b, tiny, _images()), va - vb, atol=1e-6)


def test_objectives_scale_only_by_numbers():
    a = O.text_match("forest")
    with pytest.raises(TypeError):
        a * a
    with pytest.raises(TypeError):
        a + "x"
    with pytest.raises(ZeroDivisionError):
        a / 0


def test_text_match_is_the_cosine_to_the_text_embedding(tiny):
    x = _images()
    with torch.no_grad():
        expected = (tiny.encode_image(x) @ tiny.encode_text(["forest"]).T)[:, 0]
        assert torch.allclose(O.evaluate(O.text_match("forest"), tiny, x), expected, atol=1e-5)
        per_row = O.evaluate(O.text_match(["forest", "sea"]), tiny, x)
        both = tiny.encode_image(x) @ tiny.encode_text(["forest", "sea"]).T
        assert torch.allclose(per_row, both.diagonal(), atol=1e-5)


def test_image_match_accepts_images_or_embeddings(tiny):
    x, target = _images(), _images(n=1, seed=5)
    with torch.no_grad():
        emb = tiny.encode_image(target)
        expected = (tiny.encode_image(x) @ emb.T)[:, 0]
        assert torch.allclose(O.evaluate(O.image_match(target), tiny, x), expected, atol=1e-5)
        assert torch.allclose(O.evaluate(O.image_match(emb), tiny, x), expected, atol=1e-5)
        # An image matches itself perfectly.
        assert O.evaluate(O.image_match(target), tiny, target).item() == pytest.approx(1.0, abs=1e-5)


def test_row_counts_must_agree(tiny):
    with pytest.raises(ValueError, match="rows"):
        O.text_match(["a", "b"]) + O.text_match(["a", "b", "c"])
    with pytest.raises(ValueError, match="3 targets"):
        O.evaluate(O.text_match(["a", "b", "c"]), tiny, _images(n=2))


def test_channel_and_neuron_read_the_hooked_layer(tiny):
    x = _images()
    act = _llp(tiny, x)
    with torch.no_grad():
        assert torch.allclose(O.evaluate(O.channel("llp", 108), tiny, x), act[:, 108].mean(dim=(1, 2)))
        h, w = act.shape[-2:]
        assert torch.allclose(O.evaluate(O.neuron("llp", 108), tiny, x), act[:, 108, h // 2, w // 2])
        assert torch.allclose(O.evaluate(O.neuron("llp", 7, x=0, y=1), tiny, x), act[:, 7, 1, 0])


def test_direction_in_a_layer_and_in_the_joint_space(tiny):
    x = _images()
    act = _llp(tiny, x)
    v = torch.randn(act.shape[1], generator=torch.Generator().manual_seed(0))
    unit = v / v.norm()
    with torch.no_grad():
        expected = torch.einsum("nchw,c->nhw", act, unit).mean(dim=(1, 2))
        assert torch.allclose(O.evaluate(O.direction(v, "llp"), tiny, x), expected, atol=1e-6)
        t = tiny.encode_text(["forest"])[0]
        assert torch.allclose(O.evaluate(O.direction(t), tiny, x), O.evaluate(O.text_match("forest"), tiny, x),
                              atol=1e-5)


def test_diversity_is_minus_one_for_identical_images_and_higher_for_different_ones(tiny):
    same = _images(n=1).expand(3, -1, -1, -1).contiguous()
    with torch.no_grad():
        for layer in ("llp", None):
            assert torch.allclose(O.evaluate(O.diversity(layer), tiny, same), torch.full((3,), -1.0), atol=1e-5)
            varied = torch.cat([same[:1], torch.zeros(1, 3, 128, 128), torch.ones(1, 3, 128, 128)])
            assert (O.evaluate(O.diversity(layer), tiny, varied) > -1 + 1e-4).all()
        assert O.evaluate(O.diversity("llp"), tiny, same[:1]).item() == 0.0  # one image: nothing to differ from


def test_penalties_on_known_images(tiny):
    grey = torch.full((1, 3, 8, 8), 0.5)
    stripes = torch.zeros(1, 3, 8, 8)
    stripes[..., ::2] = 1.0  # vertical stripes: every horizontal neighbour differs by 1, no vertical one
    assert O.evaluate(O.l2(), tiny, grey).item() == 0.0
    assert O.evaluate(O.l2(), tiny, stripes).item() == pytest.approx(0.25)
    assert O.evaluate(O.total_variation(), tiny, grey).item() == 0.0
    assert O.evaluate(O.total_variation(), tiny, stripes).item() == pytest.approx(1.0)


def test_on_restricts_an_objective_to_rows(tiny):
    x = _images(n=3)
    full = O.evaluate(O.text_match("forest"), tiny, x)
    only = O.evaluate(O.text_match("forest").on([0, 2]), tiny, x)
    assert torch.allclose(only, torch.stack([full[0], torch.tensor(0.0), full[2]]))


def test_hooks_are_removed_and_unknown_layers_named(tiny):
    before = _hook_count(tiny)
    O.evaluate(O.channel("llp", 1) + O.diversity("block2"), tiny, _images())
    assert _hook_count(tiny) == before
    with pytest.raises(KeyError, match="llp"):  # the message lists the layers there are
        O.evaluate(O.channel("nope", 1), tiny, _images())
    assert _hook_count(tiny) == before
    with pytest.raises(IndexError, match="channels"):
        O.evaluate(O.channel("llp", 10_000), tiny, _images())


def test_target_images_do_not_overwrite_the_step_activations(tiny):
    # image_match encodes its target through the same hooked layers; only the views' pass may be recorded.
    x, target = _images(n=1), torch.zeros(1, 3, 128, 128)
    alone = O.evaluate(O.channel("llp", 5), tiny, x)
    with_target = O.evaluate(O.image_match(target) + 0 * O.channel("llp", 5) + O.channel("llp", 5), tiny, x)
    match = O.evaluate(O.image_match(target), tiny, x)
    assert torch.allclose(with_target, match + alone, atol=1e-6)


def test_views_feed_the_model_and_images_feed_the_priors(tiny):
    images, views = torch.full((1, 3, 8, 8), 0.5), _images(n=1)
    ctx_value = O.evaluate(O.text_match("forest") - O.l2(), tiny, images, views)
    with torch.no_grad():
        expected = F.cosine_similarity(tiny.encode_image(views), tiny.encode_text(["forest"]))
    assert torch.allclose(ctx_value, expected, atol=1e-5)  # l2 of a grey image is 0


def test_copies_of_each_image_average_the_objective_over_them(tiny):
    x = _images(2)
    views = torch.cat([_images(2, seed=1), _images(2, seed=2), _images(2, seed=3)])  # copy-major: 3 copies of 2
    objective = O.text_match(["forest", "a red car"]) + 0.5 * O.channel("llp", 3)
    together = O.evaluate(objective, tiny, x, views)
    one_by_one = torch.stack([O.evaluate(objective, tiny, x, views[2 * j:2 * j + 2]) for j in range(3)])
    assert together.shape == (2,)
    assert torch.allclose(together, one_by_one.mean(dim=0), atol=1e-5)
    # Penalties read the images themselves, not the views, so copies do not change them.
    assert torch.allclose(O.evaluate(O.l2(), tiny, x, views), O.evaluate(O.l2(), tiny, x), atol=1e-7)
    with pytest.raises(ValueError, match="whole number"):
        O.evaluate(objective, tiny, x, views[:5])


class _BNTower(torch.nn.Module):
    """A two-layer conv net with BatchNorm, seen through encode_image: enough for the BN-statistics objective."""

    image_size = 16

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4, momentum=None), torch.nn.ReLU(),
                                       torch.nn.Conv2d(4, 5, 3), torch.nn.BatchNorm2d(5, momentum=None))
        # Running statistics (a cumulative average: momentum None) of images of mean 0.5, std 0.1 per pixel.
        self.train()
        with torch.no_grad():
            for _ in range(50):
                self.net(0.5 + 0.1 * torch.randn(16, 3, 16, 16))
        self.eval()

    def encode_image(self, x):
        return self.net(x).mean(dim=(2, 3))

    def feature_layers(self):
        return {}


def test_batchnorm_statistics_is_deepinversions_kl_with_the_first_layer_weighted():
    model = _BNTower()
    x = 0.5 + 0.3 * torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    value = O.evaluate(O.batchnorm_statistics(first_weight=10.0), model, x)
    assert value.shape == (4,) and torch.all(value == value[0])  # one value for the batch
    conv1, bn1, relu, conv2, bn2 = model.net
    with torch.no_grad():
        h1 = conv1(x)
        h2 = conv2(relu(bn1(h1)))
        expected = 10 * O.batchnorm_divergence(h1, bn1) + O.batchnorm_divergence(h2, bn2)
        # The divergence is the Gaussian KL per channel: zero for statistics equal to the running ones.
        mean, var = h1.mean((0, 2, 3)), h1.var((0, 2, 3), unbiased=False) + bn1.eps
        run_var = bn1.running_var + bn1.eps
        kl = 0.5 * (var / run_var + (mean - bn1.running_mean) ** 2 / run_var - 1 - torch.log(var / run_var))
    assert torch.allclose(value[0], expected, rtol=1e-5)
    assert torch.allclose(O.batchnorm_divergence(h1, bn1), kl.mean(), rtol=1e-5)
    assert _hook_count(model) == 0
    # Images from the distribution the statistics were gathered on score far lower than off-distribution ones.
    matched = O.evaluate(O.batchnorm_statistics(), model, 0.5 + 0.1 * torch.randn(32, 3, 16, 16))[0]
    assert matched < 0.1 * value[0], (matched, value[0])


def test_batchnorm_statistics_composes_and_refuses_a_model_without_batchnorm():
    model = _BNTower()
    both = O.batchnorm_statistics() + O.l2()
    assert len(both.hooks) == 1 and O.evaluate(both, model, torch.rand(2, 3, 16, 16)).shape == (2,)
    no_bn = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3))
    no_bn.encode_image = lambda x: no_bn(x).mean(dim=(2, 3))
    with pytest.raises(ValueError, match="BatchNorm"):
        O.evaluate(O.batchnorm_statistics(), no_bn, torch.rand(1, 3, 8, 8))
    assert _hook_count(no_bn) == 0

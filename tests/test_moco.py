"""Cross-modal MoCo: the queues, the momentum update and the loss of eq. 10-12, checked against direct sums."""
import math

import pytest
import torch
import torch.nn.functional as F

import brivl
from brivl.loss import inbatch_loss, moco_loss
from brivl.moco import CrossModalMoCo, QueueSizeError, check_queue_size


@pytest.fixture()
def moco():
    return CrossModalMoCo(brivl.load("tiny"), queue_size=16, momentum=0.9, temperature=0.07)


def _unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_queue_holds_exactly_the_last_nq_keys_in_order(moco):
    keys_img, keys_txt = [], []
    for step in range(7):  # 28 keys through a 16-slot queue
        ki, kt = _unit(4, 32, seed=step), _unit(4, 32, seed=100 + step)
        moco.enqueue(ki, kt)
        keys_img.append(ki)
        keys_txt.append(kt)
    img_q, txt_q = moco.queue_in_order()
    assert torch.equal(img_q, torch.cat(keys_img)[-16:].T)
    assert torch.equal(txt_q, torch.cat(keys_txt)[-16:].T)
    assert int(moco.queue_ptr) == 28 % 16 and int(moco.queue_fill) == 16


def test_forward_enqueues_the_momentum_keys_then_contrasts_with_the_whole_queue(moco):
    seen = {"img": [], "txt": []}
    moco.imgencoder_mom.register_forward_hook(lambda m, i, o: seen["img"].append(o.detach().clone()))
    moco.textencoder_mom.register_forward_hook(lambda m, i, o: seen["txt"].append(o.detach().clone()))
    model = moco.model
    texts = ["a red circle", "a blue square", "green grass", "the night sky"]
    tokens = model.tokenize(texts)
    for step in range(5):
        pixels = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(step))
        ptr = int(moco.queue_ptr)
        out = moco(pixels, tokens["input_ids"], tokens["attention_mask"])
        # The paper's order: this batch's keys N_t enter the queues, then each query meets Q minus {p}.
        assert torch.equal(moco.img_queue[:, ptr:ptr + 4], seen["img"][-1].T)
        with torch.no_grad():
            z_i, z_t = model.imgencoder(pixels), model.textencoder(**tokens)
        q_img, q_txt = moco.img_queue.T, moco.text_queue.T
        positives = list(range(ptr, ptr + 4))
        expected = (_direct_infonce(z_i, q_txt[positives], _others(q_txt, positives), 0.07)
                    + _direct_infonce(z_t, q_img[positives], _others(q_img, positives), 0.07))
        assert out["loss"].item() == pytest.approx(expected, rel=1e-5)
    img_q, txt_q = moco.queue_in_order()
    assert torch.equal(img_q, torch.cat(seen["img"])[-16:].T)
    assert torch.equal(txt_q, torch.cat(seen["txt"])[-16:].T)


def test_momentum_update_matches_the_formula(moco):
    with torch.no_grad():
        for p in moco.query_parameters():
            p.add_(torch.randn_like(p))
    before = [p.detach().clone() for p in moco.momentum_parameters()]
    query = [p.detach().clone() for p in moco.query_parameters()]
    moco.momentum_update()
    for k, k0, q in zip(moco.momentum_parameters(), before, query):
        assert torch.allclose(k, 0.9 * k0 + 0.1 * q, atol=1e-6)
    assert not any(p.requires_grad for p in moco.momentum_parameters())
    assert len(moco.momentum_parameters()) == len(moco.query_parameters()) > 50


def test_momentum_towers_start_as_copies_and_are_separate(moco):
    for k, q in zip(moco.momentum_parameters(), moco.query_parameters()):
        assert torch.equal(k, q) and k.data_ptr() != q.data_ptr()
    names = {n.split(".")[0] for n, _ in moco.state_dict().items()}
    assert names == {"imgencoder", "textencoder", "imgencoder_mom", "textencoder_mom",
                     "img_queue", "text_queue", "queue_ptr", "queue_fill"}


def _others(queue_rows, positives):
    """Per query i: the queue rows other than its own positive (Q minus {p_i})."""
    return [[queue_rows[j] for j in range(len(queue_rows)) if j != p] for p in positives]


def _direct_infonce(q, pos, negs, tau):
    """Eq. 10 by hand: -mean log exp(z.p/t) / (exp(z.p/t) + sum_n exp(z.n/t)); negs[i] lists query i's negatives."""
    total = 0.0
    for i in range(len(q)):
        num = math.exp(float(q[i] @ pos[i]) / tau)
        den = num + sum(math.exp(float(q[i] @ n) / tau) for n in negs[i])
        total += -math.log(num / den)
    return total / len(q)


def test_moco_loss_equals_eq_10_to_12_summed_directly():
    z_i, z_t = _unit(3, 8, seed=0), _unit(3, 8, seed=1)
    q_i, q_t = _unit(8, 8, seed=10), _unit(8, 8, seed=11)  # queues of 8 keys, this batch's at rows 4-6
    positions = torch.tensor([4, 5, 6])
    l_i2t, l_t2i = moco_loss(z_i, z_t, q_i.T, q_t.T, positions, 0.07)
    pos = positions.tolist()
    assert l_i2t.item() == pytest.approx(_direct_infonce(z_i, q_t[pos], _others(q_t, pos), 0.07), rel=1e-5)  # eq. 10
    assert l_t2i.item() == pytest.approx(_direct_infonce(z_t, q_i[pos], _others(q_i, pos), 0.07), rel=1e-5)  # eq. 11
    assert l_i2t.item() != pytest.approx(l_t2i.item(), rel=1e-3)


def test_inbatch_loss_uses_the_other_pairs_as_negatives():
    z_i, z_t = _unit(4, 8, seed=1), _unit(4, 8, seed=2)
    l_i2t, l_t2i = inbatch_loss(z_i, z_t, 0.1)
    expected_i2t = sum(-math.log(math.exp(float(z_i[a] @ z_t[a]) / 0.1)
                                 / sum(math.exp(float(z_i[a] @ z_t[b]) / 0.1) for b in range(4))) for a in range(4)) / 4
    expected_t2i = sum(-math.log(math.exp(float(z_t[a] @ z_i[a]) / 0.1)
                                 / sum(math.exp(float(z_t[a] @ z_i[b]) / 0.1) for b in range(4))) for a in range(4)) / 4
    assert l_i2t.item() == pytest.approx(expected_i2t, rel=1e-5)
    assert l_t2i.item() == pytest.approx(expected_t2i, rel=1e-5)


def test_queue_size_must_be_a_multiple_of_the_global_batch(moco):
    check_queue_size(9600, 192)
    with pytest.raises(QueueSizeError, match="queue size 100 is not a multiple of the global batch 32"):
        check_queue_size(100, 32)
    with pytest.raises(QueueSizeError):
        moco.enqueue(_unit(3, 32), _unit(3, 32))


def test_inbatch_mode_has_no_momentum_towers_or_queues():
    m = CrossModalMoCo(brivl.load("tiny"), loss="inbatch")
    assert not hasattr(m, "imgencoder_mom") and "img_queue" not in dict(m.named_buffers())
    tokens = m.model.tokenize(["a", "b"])
    out = m(torch.rand(2, 3, 64, 64), tokens["input_ids"], tokens["attention_mask"])
    assert out["loss"].requires_grad and out["loss"].item() > 0
    with pytest.raises(ValueError, match="unknown loss"):
        CrossModalMoCo(brivl.load("tiny"), loss="byol")


def test_cached_backbone_outputs_give_the_same_step_as_pixels_and_ids():
    torch.manual_seed(0)
    a = CrossModalMoCo(brivl.load("tiny"), queue_size=16)
    b = CrossModalMoCo(brivl.load("tiny"), queue_size=16)
    tokens = a.model.tokenize(["a red circle", "a blue square", "grass", "sky"])
    pixels = torch.rand(4, 3, 128, 128)
    with torch.no_grad():
        box_means = a.imgencoder.box_means(pixels)
        hidden = a.textencoder.hidden_states(**tokens)
    assert box_means.shape == (4, 37, 256) and hidden.shape[:2] == tokens["input_ids"].shape
    la = a(pixels, tokens["input_ids"], tokens["attention_mask"])["loss"]
    lb = b(None, None, tokens["attention_mask"], box_means=box_means, hidden=hidden)["loss"]
    assert torch.allclose(la, lb, atol=1e-5)
    assert torch.allclose(a.img_queue, b.img_queue, atol=1e-5) and torch.allclose(a.text_queue, b.text_queue, atol=1e-5)

"""Loading without random initialisation: the same model, bit for bit, as building it first and copying the weights."""
import shutil
import threading

import pytest
import torch
from torch import nn

import brivl
from brivl.checkpoint import WEIGHTS_NAME, CheckpointError
from brivl.config import preset
from brivl.model.brivl import BriVL
from brivl.model.meta import assign_state, parameters_on_meta, shares_parameters

TEXTS = ["a red circle on grass", "mountains with forests", "一只猫的照片", "x"]


def pixels(n: int, size: int) -> torch.Tensor:
    """n seeded [0, 1] images, not of the model's size (so the resize runs too)."""
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, size, size + 37, generator=g)


def assert_same_model(fast: BriVL, slow: BriVL, size: int, images: int = 2, patches: bool = True) -> None:
    """Same parameters and buffers (persistent or not), dtypes, flags and embeddings, compared with torch.equal."""
    fast_params, slow_params = dict(fast.named_parameters()), dict(slow.named_parameters())
    assert fast_params.keys() == slow_params.keys()
    for name, p in fast_params.items():
        q = slow_params[name]
        assert type(p) is nn.Parameter and not p.is_meta, name
        assert p.dtype == q.dtype and p.requires_grad == q.requires_grad and p.is_contiguous(), name
        assert torch.equal(p, q), name
    fast_buffers, slow_buffers = dict(fast.named_buffers()), dict(slow.named_buffers())
    assert fast_buffers.keys() == slow_buffers.keys()
    for name, b in fast_buffers.items():  # num_batches_tracked, position_ids, the MSPP boxes, mean/std ...
        assert not b.is_meta and b.dtype == slow_buffers[name].dtype, name
        assert torch.equal(b, slow_buffers[name]), name
    assert not fast.training and not slow.training
    with torch.no_grad():
        assert torch.equal(fast.encode_text(TEXTS), slow.encode_text(TEXTS))
        px = pixels(images, size)
        assert torch.equal(fast.encode_image(px), slow.encode_image(px))
        if patches:
            assert torch.equal(fast.patch_embeddings(px), slow.patch_embeddings(px))


def no_shared_memory(a: nn.Module, b: nn.Module) -> bool:
    """Whether no tensor of a lies in the storage of a tensor of b (two loads must not alias)."""
    ptrs = {t.untyped_storage().data_ptr() for t in [*a.parameters(), *a.buffers()]}
    return not any(t.untyped_storage().data_ptr() in ptrs for t in [*b.parameters(), *b.buffers()])


# ---------------------------------------------------------------------------------------- tiny

@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    brivl.load("tiny").save_pretrained(folder)
    return folder


def test_tiny_fast_load_equals_the_random_init_load(tiny_folder):
    fast = brivl.load(tiny_folder)  # hub.load -> BriVL.from_folder, fast by default
    slow = BriVL.from_folder(tiny_folder, skip_init=False)
    assert BriVL._construct(fast.config, fast.tokenizer, skip_init=True)[1]  # really built on meta
    assert_same_model(fast, slow, 128)
    saved = brivl.load("tiny").state_dict()  # and equal to the model that was saved
    assert all(torch.equal(v, saved[k]) for k, v in fast.state_dict().items())
    assert no_shared_memory(fast, slow)


def test_from_folder_reports_its_phases(tiny_folder):
    timings: dict[str, float] = {}
    BriVL.from_folder(tiny_folder, timings=timings)
    assert set(timings) == {"config", "weights", "tokenizer", "construct", "backbones", "assign"}
    assert all(t >= 0 for t in timings.values())


def truncated_copy(folder, to):
    """A copy of a model folder whose weights file lost its second half."""
    shutil.copytree(folder, to)
    data = (to / WEIGHTS_NAME).read_bytes()
    (to / WEIGHTS_NAME).write_bytes(data[: len(data) // 2])
    return to


def test_truncated_weights_name_the_file(tiny_folder, tmp_path):
    bad = truncated_copy(tiny_folder, tmp_path / "bad")
    for skip_init in (True, False):
        with pytest.raises(CheckpointError, match="truncated or damaged") as err:
            BriVL.from_folder(bad, skip_init=skip_init)
        assert str(bad / WEIGHTS_NAME) in str(err.value)
    with pytest.raises(CheckpointError, match=str(bad / WEIGHTS_NAME)):
        brivl.load(bad)


def test_missing_and_misshaped_keys_are_listed(tiny_folder, tmp_path):
    from safetensors.torch import load_file, save_file

    state = load_file(str(tiny_folder / WEIGHTS_NAME))
    dropped = "imgencoder.learnable.imgFC.fc2.bias"
    del state[dropped]
    state["textencoder.learnable.textFC.fc1.weight"] = torch.zeros(3, 3)
    bad = tmp_path / "bad"
    shutil.copytree(tiny_folder, bad)
    save_file(state, str(bad / WEIGHTS_NAME))
    with pytest.raises(CheckpointError) as err:
        brivl.load(bad)
    message = str(err.value)
    assert str(bad / WEIGHTS_NAME) in message and dropped in message and "textFC.fc1.weight" in message


# ------------------------------------------------------------------ brivl-lite, heads only

@pytest.fixture(scope="module")
def lite_folder(tmp_path_factory):
    """A stand-in for brivl/assets/brivl-lite: seeded random heads saved as `brivl build-default` saves them."""
    folder = tmp_path_factory.mktemp("brivl-lite")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BriVL(preset("brivl-lite"))
    model.save_pretrained(folder, backbones=False, dtype=torch.float16)
    return folder


@pytest.mark.slow
def test_lite_heads_only_fast_load_equals_the_random_init_load(lite_folder):
    fast = brivl.load(lite_folder)  # the path brivl.load("brivl-lite") takes, on the stand-in folder
    slow = BriVL.from_folder(lite_folder, skip_init=False)
    assert BriVL._construct(fast.config, fast.tokenizer, skip_init=True)[1]  # really built on meta
    assert_same_model(fast, slow, 224, images=1, patches=False)  # patches: same weights as encode_image
    assert no_shared_memory(fast, slow)
    assert fast.textencoder.backbone.bert.embeddings.position_ids.tolist()[0][:3] == [0, 1, 2]


def test_truncated_lite_heads_name_the_file(lite_folder, tmp_path):
    bad = truncated_copy(lite_folder, tmp_path / "brivl-lite")
    with pytest.raises(CheckpointError, match="truncated or damaged") as err:
        brivl.load(bad)
    assert str(bad / WEIGHTS_NAME) in str(err.value)


# -------------------------------------------------------------------- the meta construction

def test_parameters_on_meta_leaves_buffers_real_and_restores_itself():
    register = nn.Module.register_parameter
    with parameters_on_meta():
        bn = nn.BatchNorm1d(4)
        with parameters_on_meta():  # nesting is fine
            linear = nn.Linear(3, 2)
    assert bn.weight.is_meta and linear.weight.is_meta and bn.weight.requires_grad
    assert not bn.running_var.is_meta and torch.equal(bn.running_var, torch.ones(4))
    assert nn.Module.register_parameter is register and not nn.Linear(3, 2).weight.is_meta
    with pytest.raises(RuntimeError, match="boom"), parameters_on_meta():
        raise RuntimeError("boom")
    assert nn.Module.register_parameter is register


def test_parameters_on_meta_is_per_thread():
    built: dict[str, nn.Linear] = {}
    inside, release = threading.Event(), threading.Event()

    def other_thread():
        inside.wait(10)
        built["other"] = nn.Linear(3, 2)  # while the main thread is inside the context
        release.set()

    worker = threading.Thread(target=other_thread)
    worker.start()
    with parameters_on_meta():
        inside.set()
        release.wait(10)
        built["main"] = nn.Linear(3, 2)
    worker.join()
    assert built["main"].weight.is_meta and not built["other"].weight.is_meta


def test_assign_state_casts_to_the_model_dtypes_and_refuses_a_bad_state():
    with parameters_on_meta():
        model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    state = {k: torch.randn(v.shape).half() if v.is_floating_point() else torch.tensor(7, dtype=torch.int32)
             for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match="weights.safetensors"):
        assign_state(model, {k: v for k, v in state.items() if k != "0.bias"}, "weights.safetensors")
    assert model[0].bias.is_meta  # untouched on error
    assign_state(model, state, "weights.safetensors")
    assert model[0].weight.dtype == torch.float32 and torch.equal(model[0].weight, state["0.weight"].float())
    assert model[1].num_batches_tracked.dtype == torch.int64 and model[1].num_batches_tracked.item() == 7
    assert isinstance(model[0].weight, nn.Parameter) and model[0].weight.requires_grad


def test_tied_weights_are_built_the_slow_way():
    tied = nn.Sequential(nn.Embedding(5, 4), nn.Linear(4, 5, bias=False))
    assert not shares_parameters(tied)
    tied[1].weight = tied[0].weight
    assert shares_parameters(tied)


def test_a_self_contained_tokenizer_waits_for_first_use(tiny_folder, tmp_path):
    model = BriVL.from_folder(tiny_folder)
    assert model._tokenizer is None and model._tokenizer_pending  # not built by the load
    model.save_pretrained(tmp_path / "again")  # nor by a save: it is not written beside the weights
    assert model._tokenizer is None and not (tmp_path / "again" / "tokenizer_config.json").exists()
    ids = model.tokenize(["a cat"])["input_ids"]  # first use builds it
    assert model._tokenizer is not None and ids.shape[0] == 1

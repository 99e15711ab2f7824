"""The BriVL towers (image_encoder, text_encoder, mspp, blocks) and the model that joins them (brivl.BriVL).

May import the rest of the core (config, checkpoint, tokenizer, lite's packaged backbones); never the hub.

Imported by module (`from brivl.model.brivl import BriVL`): this package file imports nothing, so the
low-level parts (meta, blocks) can be used without building the whole model module.
"""

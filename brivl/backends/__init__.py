"""Other model families behind the TwoTower protocol (OpenCLIP), built from local files only.

May import the low-level core (errors, checkpoint, inputs); the hub imports them, never the other way round.
open_clip (the [openclip] extra) loads only when such a model is built.
"""

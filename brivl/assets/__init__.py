"""The files brivl ships (package data): `brivl-lite` (the default model's heads and config) and `vqgan-lite`.

Read through importlib.resources, never by a path relative to the source tree, so they are found wherever the
package is installed. Imports nothing from brivl.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path


def asset_folder(name: str) -> Path:
    """The folder of one shipped asset ("brivl-lite", "vqgan-lite") as a file-system path."""
    # A wheel installs package data as plain files, so the resource is a real folder that torch and safetensors
    # can open by path (a zipped install would need importlib.resources.as_file; brivl is never zipped).
    return Path(str(resources.files(__name__).joinpath(name)))

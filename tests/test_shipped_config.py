"""The brivl-lite preset and the config.json shipped beside its heads describe the same model (issue 21 found
the preset's queue_size 4096 against a shipped 1024)."""
import json

from brivl.assets import asset_folder
from brivl.config import BriVLConfig, preset


def test_the_shipped_brivl_lite_config_is_the_preset():
    shipped = json.loads((asset_folder("brivl-lite") / "config.json").read_text(encoding="utf-8"))
    ours = json.loads(json.dumps(preset("brivl-lite").to_dict()))  # tuples become lists, as in the file
    assert shipped["queue_size"] == ours["queue_size"]
    assert shipped == ours
    assert BriVLConfig.load(asset_folder("brivl-lite")).queue_size == preset("brivl-lite").queue_size

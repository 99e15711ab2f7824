"""The brivl-lite build recipe (the heads shipped in brivl/assets/brivl-lite)."""

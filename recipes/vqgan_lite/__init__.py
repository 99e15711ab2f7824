"""The vqgan-lite build recipe (the VQGAN shipped in brivl/assets/vqgan-lite)."""

"""The vqgan-lite build recipe: the VQGAN shipped in brivl/assets/vqgan-lite (`brivl build-vqgan`).

May import brivl, viz (the VQGAN modules) and recipes.brivl_lite (its training images), relatively.
"""

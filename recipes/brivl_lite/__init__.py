"""The brivl-lite build recipe: the heads and config shipped in brivl/assets/brivl-lite (`brivl build-default`).

May import brivl and viz (synthesis uses viz's image prior), and its siblings relatively.
"""

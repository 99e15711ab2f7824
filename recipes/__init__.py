"""recipes: the builds of the assets brivl ships (brivl_lite: the default model's heads; vqgan_lite: the VQGAN).

May import brivl and viz; nothing imports recipes but its own commands (recipes.cli: build-default,
build-vqgan). Installed as `brivl_recipes`, so it imports itself relatively.
"""

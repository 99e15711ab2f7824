"""app: the Imagine studio, a Gradio Blocks app over the public functions of `brivl` and `viz` (`brivl studio`).

May import brivl and viz; nothing imports app but its own command (app.cli). The package file imports nothing,
so registering `brivl studio` does not load gradio (the [studio] extra): app.studio.launch does.
"""

"""One module per studio tab; each has `build(studio)`, called inside its gr.Tab."""

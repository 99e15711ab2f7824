"""One module per studio tab; each has `build(studio)`, called inside its gr.Tab.

May import brivl, viz and the rest of app.
"""

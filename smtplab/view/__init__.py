"""What a reader sees.

SVG pictures drawn from the lab's data (no ipywidgets needed) and the widgets.
"""

"""Gradio apps: try a demo inline, publish it as its own server under the hub, share it as a link
that only the right people can open."""

"""Notebooks as HTML that needs nobody else's server: the job runner's ``output.html`` and the
experiment panel's snapshot. nbconvert's own template loads scripts from public CDNs (broken
offline, and a request to a third party each time someone opens a result); this one loads
nothing. Widget outputs, which need a live kernel, read as one line saying so instead of their
Python repr."""

from __future__ import annotations

import copy
from pathlib import Path

TEMPLATES = Path(__file__).parent / "nbconvert"
TEMPLATE = "hubml-offline"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_NOTE = "[an interactive widget: open the notebook in JupyterLab to use it]"


def _without_widget_reprs(nb):
    nb = copy.deepcopy(nb)
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []) or []:
            data = output.get("data") or {}
            if WIDGET_VIEW in data:
                output["data"] = {"text/plain": WIDGET_NOTE}
    nb.get("metadata", {}).pop("widgets", None)
    return nb


def notebook_html(nb) -> str:
    """``nb`` (an nbformat notebook node) as one self-contained HTML page."""
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name=TEMPLATE, extra_template_basedirs=[str(TEMPLATES)])
    body, _ = exporter.from_notebook_node(_without_widget_reprs(nb))
    return body

"""A notebook rendered as HTML loads nothing from other hosts, and widgets read as a note."""

import re

import nbformat

from hubml.extensions.common.nbhtml import WIDGET_NOTE, notebook_html


def test_the_html_loads_nothing_from_public_hosts_and_widgets_read_as_a_note():
    widget = nbformat.v4.new_output(
        "display_data",
        data={
            "text/plain": "ExperimentPanel(children=(HTML(value='<b>Log a run</b>'),))",
            "application/vnd.jupyter.widget-view+json": {
                "model_id": "abc",
                "version_major": 2,
                "version_minor": 0,
            },
        },
    )
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell("Loss: $x^2$\n\n```mermaid\ngraph TD; A-->B\n```"),
            nbformat.v4.new_code_cell("panel", outputs=[widget]),
            nbformat.v4.new_code_cell(
                "print(41 + 1)", outputs=[nbformat.v4.new_output("stream", text="42\n")]
            ),
        ]
    )
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    page = notebook_html(nb)
    fetched = re.findall(r"""(?:src|href)\s*=\s*["'](https?:)?//""", page)
    imports = re.findall(r"""import\(\s*["']https?://""", page)
    assert fetched == [] and imports == [], (fetched, imports)
    assert "cdnjs" not in page and "unpkg" not in page and "jsdelivr" not in page
    assert WIDGET_NOTE in page and "ExperimentPanel(children" not in page
    assert "42" in page and "x^2" in page
    assert nb.cells[1].outputs[0]["data"]["text/plain"].startswith("ExperimentPanel")  # not mutated

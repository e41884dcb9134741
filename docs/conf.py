"""Sphinx configuration of Conveyor's documentation site (`make docs`).

Pages are Markdown (MyST); the API reference comes from the docstrings (autodoc) and the
CLI reference from the click commands themselves (sphinx-click), so neither can drift from
the code. The build runs with warnings as errors.

Adding a page: a Markdown file under concepts/, guides/ or reference/, listed in a toctree
of index.md (a page in none is a warning, so an error). Its ```python blocks run in
tests/test_docs.py against a real Redis; a block that cannot run alone says why on the line
above it (``% test: skip REASON``; see that test for ``pytest`` and ``module`` blocks).
"""

from __future__ import annotations

from importlib.metadata import version as _version

project = "Conveyor"
author = "The Conveyor authors"
copyright = "the Conveyor authors"  # noqa: A001 (Sphinx's own name for it)
release = _version("conveyor-queue")
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx_click",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# Markdown: ::: fences for admonitions, "Name\n: text" definition lists, and anchors on
# headings down to ### so pages can link to a section as [text](page.md#section).
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# Autodoc: members in source order (the order the modules explain them in), signatures with
# their annotations; each directive names the members it shows.
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autoclass_content = "both"

html_theme = "furo"
html_title = f"Conveyor {release}"
html_static_path = ["_static"]
html_css_files = ["conveyor.css"]
pygments_style = "friendly"
pygments_dark_style = "monokai"

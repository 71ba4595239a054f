"""What the notebook generators share: writing a notebook, and the real-provider cell.

Each generator builds its cells and calls :func:`write_notebook`, which writes it without
outputs or widget state and (unless the notebook has its own) adds the one cell that points the
notebook at a real provider, skipped when no endpoint is set.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
from nbformat import NotebookNode
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"

MARKDOWN = """## Against a real provider

Everything above ran against the bundled server. The same code streams from any
OpenAI-compatible endpoint: set `STREAMKIT_BASE_URL` (e.g. `https://api.openai.com/v1`,
`http://localhost:8000/v1` for vLLM, `http://localhost:11434/v1` for Ollama,
`http://localhost:8080/v1` for llama.cpp), `STREAMKIT_MODEL`, and `OPENAI_API_KEY` if the endpoint
needs one. **Without them this cell does nothing**, and no key is ever stored in the notebook."""

CODE = """import os

if os.environ.get("STREAMKIT_BASE_URL"):
    real = sk.Client(os.environ["STREAMKIT_BASE_URL"], model=os.environ.get("STREAMKIT_MODEL"))
    real_result = await real.chat("Explain server-sent events in two sentences.", view="console")
    print(real_result.summary())
else:
    print("STREAMKIT_BASE_URL is not set: staying on the bundled server.")"""


def add_real_provider_cell(cells: list[NotebookNode]) -> list[NotebookNode]:
    """Insert the real-provider section just before the closing "What to try next" section."""
    for i in range(len(cells) - 1, -1, -1):
        if cells[i].cell_type == "markdown" and cells[i].source.startswith("## What to try next"):
            return [*cells[:i], new_markdown_cell(MARKDOWN), new_code_cell(CODE), *cells[i:]]
    raise ValueError("the notebook has no '## What to try next' section to put the cell before")


def write_notebook(name: str, cells: list[NotebookNode], *, real_provider: bool = True) -> None:
    """Write ``notebooks/<name>`` with no outputs; add the real-provider section if asked."""
    if real_provider:
        cells = add_real_provider_cell(cells)
    for i, cell in enumerate(cells):
        cell.id = f"cell-{i:02d}"  # stable ids: regenerating a notebook changes only what changed
    nb = new_notebook(cells=cells)
    nb.metadata = {
        "kernelspec": {
            "display_name": "Python 3 (ipykernel)",
            "language": "python",
            "name": "python3",
        },
        "language_info": {"name": "python"},
    }
    path = NOTEBOOKS / name
    nbformat.write(nb, path)
    # The house format (the test command checks it) applies to notebook cells too.
    subprocess.run([sys.executable, "-m", "ruff", "format", "--quiet", str(path)], check=True)
    print(f"wrote {name}")

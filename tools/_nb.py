"""What the notebook generators share: writing a notebook, and the real-provider cell.

Each generator builds its cells and calls :func:`write_notebook`, which writes it without
outputs or widget state and (unless the notebook has its own) adds the one cell that points the
notebook at a real provider, skipped when no endpoint is set.

The one exception to "no outputs": a cell whose first line is ``# NBVAL_CHECK_OUTPUT``. nbval
compares such a cell's output with the stored one even under ``--nbval-lax``, so the notebook
must carry what a fresh run prints, and an execution count (nbval refuses a cell with outputs
and none). :func:`write_notebook` runs the notebook in a scratch kernel and stores those cells'
outputs and counts only (no widget state).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbformat import NotebookNode
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
CHECK_OUTPUT = "# NBVAL_CHECK_OUTPUT"
CELL_TIMEOUT_S = 600  # the slowest cell (a load sweep) takes well under a minute

MARKDOWN = """## Against a real provider

Everything above ran against the bundled server. The same code streams from any
OpenAI-compatible endpoint, configured as the openai SDK is: set `OPENAI_BASE_URL` (e.g.
`https://api.openai.com/v1`, `http://localhost:8000/v1` for vLLM, `http://localhost:11434/v1` for
Ollama, `http://localhost:8080/v1` for llama.cpp) and `OPENAI_API_KEY` if the endpoint needs one
(`STREAMKIT_BASE_URL` / `STREAMKIT_API_KEY` win when set; `STREAMKIT_MODEL` picks a model, else the
server's own is used). **Without them this cell does nothing**, and no key is ever stored in the
notebook."""

CODE = """real = sk.Client.from_env()  # None unless STREAMKIT_BASE_URL or OPENAI_BASE_URL is set
if real is None:
    print("No endpoint configured: staying on the bundled server.")
else:
    real_result = await real.chat("Explain server-sent events in two sentences.", view="console")
    await real.aclose()"""


def add_real_provider_cell(cells: list[NotebookNode]) -> list[NotebookNode]:
    """Insert the real-provider section just before the closing "What to try next" section."""
    for i in range(len(cells) - 1, -1, -1):
        if cells[i].cell_type == "markdown" and cells[i].source.startswith("## What to try next"):
            return [*cells[:i], new_markdown_cell(MARKDOWN), new_code_cell(CODE), *cells[i:]]
    raise ValueError("the notebook has no '## What to try next' section to put the cell before")


def is_checked(cell: NotebookNode) -> bool:
    """Whether nbval compares this cell's output with the stored one (its first line says so)."""
    return cell.cell_type == "code" and cell.source.startswith(CHECK_OUTPUT)


def store_checked_outputs(path: Path) -> None:
    """Run the notebook at ``path`` and store the outputs of its checked cells, and only those.

    The run happens on a copy, in a scratch directory, with no real provider configured (the
    checked outputs come from the bundled server, and a run must not spend anyone's credits).
    Any failing cell stops the generator. A checked cell keeps the execution count of that
    top-to-bottom run (its position among the code cells), so a rerun that prints the same text
    writes the same file.
    """
    nb = nbformat.read(path, as_version=4)
    if not any(is_checked(cell) for cell in nb.cells):
        return
    run = nbformat.read(path, as_version=4)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMKIT_", "OPENAI_"))}
    with tempfile.TemporaryDirectory() as folder:
        client = NotebookClient(
            run,
            timeout=CELL_TIMEOUT_S,
            kernel_name="python3",
            coalesce_streams=True,
            resources={"metadata": {"path": folder}},
        )
        client.execute(env=env, cwd=folder)
    for cell, ran in zip(nb.cells, run.cells, strict=True):
        if is_checked(cell):
            cell.execution_count = ran.execution_count
            cell.outputs = ran.outputs
    nbformat.write(nb, path)


def write_notebook(name: str, cells: list[NotebookNode], *, real_provider: bool = True) -> None:
    """Write ``notebooks/<name>``: outputs only in checked cells; add the real-provider section.

    Args:
        name: the file name under ``notebooks/``.
        cells: the cells, sources as they should read (ruff formats them here).
        real_provider: add the standard real-provider section before "What to try next"
            (notebooks with their own say False).
    """
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
    store_checked_outputs(path)  # after formatting: the stored sources are the ones that ran
    print(f"wrote {name}")

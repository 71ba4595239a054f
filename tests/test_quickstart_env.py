"""The quick start runs every notebook: declared dependencies, and the notebooks in its environment.

``scripts/quickstart.sh`` installs ``-e ".[lab]"`` and nothing else, so a notebook that needs a
package outside the runtime dependencies and the ``lab`` extra works in the test environment
(which has everything) and fails for a newcomer (#9). Two guards:

- the package's imports match ``[project].dependencies``: every third-party module it imports
  (lazy imports inside functions too) is a runtime dependency, an optional extra's, or a known
  optional import, and every runtime dependency is imported;
- every ``notebooks/*.ipynb`` runs top to bottom with nbclient, in a kernel of a virtualenv built
  only by ``scripts/quickstart.sh --install-only``. ``scripts/test.sh`` builds it afresh
  (``.venv-quickstart``) and names its python in ``STREAMKIT_QUICKSTART_PYTHON``; without that
  variable the notebook tests skip, and fail under CI (``CI`` set) so they cannot vanish there.
  The notebooks run offline against the bundled server: no provider variables reach them.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
ENV_VAR = "STREAMKIT_QUICKSTART_PYTHON"
BUILD_HINT = (
    "python3 -m venv .venv-quickstart && "
    "(. .venv-quickstart/bin/activate && ./scripts/quickstart.sh --install-only) && "
    f"export {ENV_VAR}=$PWD/.venv-quickstart/bin/python (scripts/test.sh does this)"
)
# Imported by the package but in no dependency list, each guarded by ``except ImportError``.
OPTIONAL_IMPORTS = {
    "tiktoken": "count_tokens falls back to a labelled heuristic without it",
}
# Installed by the test extra only: present in the quick-start environment, they would mean the
# variable names the test environment.
TEST_ONLY = ("pytest", "nbval", "playwright")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _name(requirement: str) -> str:
    """The normalized distribution name of a requirement string (PEP 503)."""
    name = re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def _project() -> dict[str, object]:
    project: dict[str, object] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project


def _extra_names(extra: str, extras: dict[str, list[str]]) -> set[str]:
    """Distribution names an extra installs, with self-references (``streamkit[x]``) expanded."""
    names: set[str] = set()
    for requirement in extras[extra]:
        if _name(requirement) == "streamkit":
            inner = re.search(r"\[([^\]]+)\]", requirement)
            assert inner, f"{requirement!r} names no extra"
            for other in inner.group(1).split(","):
                names |= _extra_names(other.strip(), extras)
        else:
            names.add(_name(requirement))
    return names


def _imported_modules() -> set[str]:
    """Top-level names of every absolute import in ``streamkit/``, at any depth of the code."""
    modules: set[str] = set()
    for path in (ROOT / "streamkit").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names) - {"__future__", "streamkit"}


# -- what the quick start installs -------------------------------------------------------------


def test_quick_start_installs_the_lab_extra() -> None:
    script = (ROOT / "scripts" / "quickstart.sh").read_text()
    assert 'pip install --quiet -e ".[lab]"' in script
    assert "--install-only" in script
    extras = _project()["optional-dependencies"]
    assert isinstance(extras, dict)
    lab = _extra_names("lab", extras)
    # JupyterLab and a kernel, and Dask for run_load_distributed in notebooks/07_load.ipynb
    assert {"jupyterlab", "ipykernel", "distributed"} <= lab
    assert lab <= _extra_names("test", extras), "the test extra must include the lab extra"


def test_every_import_of_the_package_is_declared() -> None:
    project = _project()
    runtime = {_name(r) for r in project["dependencies"]}  # type: ignore[attr-defined]
    extras = project["optional-dependencies"]
    assert isinstance(extras, dict)
    optional = set().union(*(_extra_names(e, extras) for e in extras if e not in ("lab", "test")))
    distributions = importlib.metadata.packages_distributions()
    undeclared = []
    for module in sorted(_imported_modules() - set(OPTIONAL_IMPORTS)):
        names = {_name(d) for d in distributions.get(module, [])}
        assert names, f"streamkit imports {module}, which is not installed here"
        if not names & (runtime | optional):
            undeclared.append(f"{module} ({', '.join(sorted(names))})")
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_every_runtime_dependency_is_imported() -> None:
    runtime = {_name(r) for r in _project()["dependencies"]}  # type: ignore[attr-defined]
    distributions = importlib.metadata.packages_distributions()
    imported = {_name(d) for m in _imported_modules() for d in distributions.get(m, [])}
    # Notebook and test tools (JupyterLab, ipykernel, nbval, nest-asyncio) are never imported.
    assert runtime <= imported, f"declared but never imported: {sorted(runtime - imported)}"


# -- every notebook in the quick-start environment ---------------------------------------------

# Runs inside the quick-start virtualenv: executes one notebook with nbclient, writes the result
# to argv[2] (even on failure), and first runs a cell that records which interpreter the kernel is.
RUNNER = """
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

path, out = Path(sys.argv[1]), Path(sys.argv[2])
nb = nbformat.read(path, as_version=4)
probe = nbformat.v4.new_code_cell(
    "import json as _json, sys as _sys, streamkit as _sk\\n"
    "print(_json.dumps({'prefix': _sys.prefix, 'streamkit': _sk.__file__}))"
)
nb.cells.insert(0, probe)
client = NotebookClient(
    nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(path.parent)}}
)
try:
    client.execute()
finally:
    nbformat.write(nb, out)
"""


@dataclass(frozen=True)
class QuickstartEnv:
    python: str
    prefix: Path


@pytest.fixture(scope="session")
def quickstart() -> QuickstartEnv:
    """The virtualenv of ``STREAMKIT_QUICKSTART_PYTHON``, checked to be a quick-start one."""
    python = os.environ.get(ENV_VAR, "")
    if not python:
        message = f"{ENV_VAR} is not set; build the quick-start environment: {BUILD_HINT}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    probe = subprocess.run(
        [
            python,
            "-c",
            "import importlib.util, json, sys\n"
            f"print(json.dumps([sys.prefix, [m for m in {TEST_ONLY!r} "
            "if importlib.util.find_spec(m)]]))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=_environ(None),
    )
    assert probe.returncode == 0, f"{ENV_VAR}={python} does not run: {probe.stderr}"
    prefix, test_only = json.loads(probe.stdout)
    assert Path(prefix).resolve() != Path(sys.prefix).resolve(), (
        f"{ENV_VAR} names the test environment; it must be one built by the quick start alone"
    )
    assert not test_only, f"{ENV_VAR} has test-only packages {test_only}: not a quick-start env"
    return QuickstartEnv(python, Path(prefix))


def _environ(env: QuickstartEnv | None, scratch: Path | None = None) -> dict[str, str]:
    """The process environment of a newcomer's shell in the quick-start virtualenv.

    No provider or streamkit variables (the notebooks run offline against the bundled server),
    none of the test environment's Python or Jupyter settings, and, given ``scratch``, Jupyter
    and IPython directories of their own, so no kernelspec of this machine's user replaces the
    virtualenv's own.
    """
    dropped = ("STREAMKIT_", "OPENAI_", "JUPYTER", "IPYTHON", "PYTHON", "VIRTUAL_ENV")
    environ = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    if env is not None:
        environ["VIRTUAL_ENV"] = str(env.prefix)
        environ["PATH"] = f"{Path(env.python).parent}{os.pathsep}{environ.get('PATH', '')}"
    if scratch is not None:
        for name in ("JUPYTER_DATA_DIR", "JUPYTER_CONFIG_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR"):
            folder = scratch / name.lower()
            folder.mkdir(parents=True, exist_ok=True)
            environ[name] = str(folder)
    return environ


def test_there_are_notebooks() -> None:
    assert NOTEBOOKS


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_in_the_quick_start_environment(
    quickstart: QuickstartEnv, path: Path, tmp_path: Path
) -> None:
    out = tmp_path / path.name
    run = subprocess.run(
        [quickstart.python, "-c", RUNNER, str(path), str(out)],
        capture_output=True,
        text=True,
        timeout=840,
        env=_environ(quickstart, tmp_path / "jupyter"),
        cwd=path.parent,
    )
    errors = ANSI.sub("", run.stderr)  # nbclient's tracebacks carry the kernel's colours
    assert run.returncode == 0, (
        f"{path.name} failed in the quick-start environment:\n{errors[-6000:]}"
    )
    probe = json.loads(nbformat.read(out, as_version=4).cells[0].outputs[0].text)
    # The kernel was the quick-start virtualenv's, running this checkout's streamkit.
    assert Path(probe["prefix"]).resolve() == quickstart.prefix.resolve()
    assert Path(probe["streamkit"]).resolve().is_relative_to(ROOT / "streamkit")

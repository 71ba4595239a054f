"""The layout is the data flow: each layer imports only the layers below it, and no cycles.

docs/architecture.md draws the picture; this test keeps it true. It reads every module's imports
(statically, including imports inside functions; ``if TYPE_CHECKING:`` blocks excepted, since they
never run) and checks them against the table below.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "streamkit"

# Layers, lowest first: a module may import its own layer and any layer listed before it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    # the shared vocabulary: plain data, errors, the sans-I/O SSE decoder, retry policy maths
    ("vocabulary", ("errors", "events", "_sse", "_html", "retry")),
    # the bundled simulator: imports only the vocabulary (and its own package)
    ("server", ("server",)),
    # bytes -> events, one module per wire; they know nothing above them
    ("transports", ("transports",)),
    # the one retry/resume loop
    ("resilience", ("resume",)),
    # observers of events: the result, conversation state, batching, metrics, cost
    ("observers", ("result", "state", "batching", "metrics", "cost")),
    # views: console, widgets, controls, dashboard
    ("views", ("render",)),
    # the public face that opens streams: configuration, discovery, the chat run
    (
        "client",
        ("source", "chat_run", "endpoint", "client", "_client_options", "_sync", "shortcuts"),
    ),
    # experiments built on sources: load runs, routing, Dask, the stream manager, cost experiments
    (
        "load",
        (
            "load",
            "balance",
            "endpoint_state",
            "endpoint_health",
            "distributed",
            "shard_progress",
            "manager",
            "experiments",
            "_vllm",
        ),
    ),
    # argument parsing and printing only
    ("cli", ("cli", "__main__")),
]

# Deliberate exceptions, each with its reason.
ALLOWED = {
    # cost prices the simulated models from the simulator's own model table (plain data)
    ("cost", "server"),
    # the chat box is the one view that drives a conversation: with no source it uses the
    # default client (imported on first use)
    ("render.chatbox", "shortcuts"),
}

# Deprecated aliases: an old import path kept working (with a DeprecationWarning) by importing
# the new home on first use. They are not dependencies of the design, so the cycle check skips them.
DEPRECATED_ALIASES = {("client", "shortcuts")}


def _module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


MODULES = _module_names()


def _imports(name: str, path: Path) -> Iterator[str]:
    """The streamkit modules ``name`` imports at run time (relative to the package)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                skipped.update(id(n) for n in ast.walk(child))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join([*base, *([node.module] if node.module else [])])
            elif node.module and node.module.startswith("streamkit"):
                target = node.module.removeprefix("streamkit").lstrip(".")
            else:
                continue
            subs = [f"{target}.{a.name}".lstrip(".") for a in node.names]
            found = [s for s in subs if s in MODULES]
            # "from . import x" imports module x; "from .m import f" imports module m
            yield from found if len(found) == len(subs) else [target, *found]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("streamkit."):
                    yield alias.name.removeprefix("streamkit.")


def _layer(name: str) -> int | None:
    top = name.split(".")[0]
    for rank, (_, members) in enumerate(LAYERS):
        if top in members:
            return rank
    return None


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in MODULES.items():
        for target in _imports(name, path):
            if target != name and target in MODULES and (name, target) not in DEPRECATED_ALIASES:
                graph[name].add(target)
    return graph


def _allowed(source: str, target: str) -> bool:
    return any(
        (source == s or source.startswith(s + ".")) and (target == t or target.startswith(t + "."))
        for s, t in ALLOWED
    )


def test_every_module_has_a_layer() -> None:
    missing = sorted(n for n in MODULES if n and _layer(n) is None)
    assert not missing, f"add these modules to a layer in LAYERS: {missing}"


def test_layers_import_only_downwards() -> None:
    wrong = []
    for source, targets in _graph().items():
        if not source:  # the package face re-exports everything, lazily
            continue
        for target in sorted(targets):
            if not target:
                continue  # `from .. import __version__`
            rank_s, rank_t = _layer(source), _layer(target)
            assert rank_s is not None and rank_t is not None
            if rank_t > rank_s and not _allowed(source, target):
                wrong.append(
                    f"{source} ({LAYERS[rank_s][0]}) imports {target} ({LAYERS[rank_t][0]})"
                )
    assert not wrong, "\n".join(wrong)


def test_the_server_imports_nothing_client_side() -> None:
    outside = {
        f"{s} -> {t}"
        for s, ts in _graph().items()
        if s.startswith("server")
        for t in ts
        if not t.startswith("server") and _layer(t) != 0
    }
    assert not outside, outside


def test_no_import_cycles() -> None:
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for name in MODULES:
        if name and name not in index:
            visit(name)
    assert not cycles, cycles


def test_no_private_name_is_imported_from_another_module() -> None:
    found = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (
                node.level or "streamkit" in (node.module or "")
            ):
                for alias in node.names:
                    private = alias.name.startswith("_") and not alias.name.startswith("__")
                    module = f"{node.module}.{alias.name}" if node.module else alias.name
                    is_module = any(m.endswith(module.lstrip(".")) for m in MODULES)
                    if private and not is_module:
                        found.append(
                            f"{name}: {alias.name} from {'.' * node.level}{node.module or ''}"
                        )
    assert not found, found


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n))
def test_no_module_over_600_lines(name: str) -> None:
    lines = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    assert lines <= 600, f"{name}: {lines} lines"

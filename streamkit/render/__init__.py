"""Views: where a stream is shown, chosen like ``tqdm.auto`` (a widget in Jupyter, text elsewhere).

``view_kind()`` decides, and ``STREAMKIT_VIEW`` overrides it: ``widget``, ``console`` or ``auto``
(the default). ``auto`` picks the widget only inside an IPython *kernel* (a notebook or JupyterLab
console, where a frontend can render widgets) and plain text everywhere else: terminals, pipes, CI
logs, and IPython in a terminal.

The widget is :class:`MarkdownView`: the reply rendered as sanitized Markdown while it streams.
The plain-text widget is one argument away, by name (:func:`named_view`, and ``view=`` of
:meth:`streamkit.Client.chat`):

- ``"auto"``: :func:`auto_view` (Markdown in a kernel, text on a console);
- ``"widget"`` or ``"markdown"``: a :class:`MarkdownView`, wherever it runs. ``"widget"`` means
  *the* widget, the one ``auto`` shows in JupyterLab, so that ``STREAMKIT_VIEW=widget`` and
  ``view="widget"`` agree; the plain ``WidgetView`` of earlier releases is a class away;
- ``"text"``: the plain-text delta widget (:class:`DeltaView`) in a kernel, text on a console
  (:func:`delta_view`): model output shown exactly as it came, in a ``<pre>``;
- ``"console"``: a :class:`ConsoleView`.

The widget modules are imported on first use (:class:`WidgetView`, :class:`DeltaView`,
:class:`MarkdownView`, :func:`delta_view`, :class:`ControlsPanel`), so scripts and the command
line never pay for importing ipywidgets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from ..errors import UsageError
from ._base import BufferedView, View
from ._choice import ENV_VAR as ENV_VAR
from ._choice import ViewKind as ViewKind
from ._choice import view_kind
from .console import ConsoleView

if TYPE_CHECKING:
    from .controls import ControlsPanel
    from .delta import DeltaView, delta_view
    from .markdown import MarkdownView
    from .widget import WidgetView

__all__ = [
    "BufferedView",
    "ConsoleView",
    "ControlsPanel",
    "DeltaView",
    "MarkdownView",
    "View",
    "ViewName",
    "WidgetView",
    "auto_view",
    "delta_view",
    "named_view",
    "resolve_view",
    "view_kind",
]

ViewName = Literal["auto", "widget", "markdown", "text", "console"]
_VIEW_NAMES = ("auto", "widget", "markdown", "text", "console")


def __getattr__(name: str) -> object:
    # PEP 562: import the widget module (and ipywidgets with it) only when someone asks for it.
    if name == "WidgetView":
        from .widget import WidgetView

        return WidgetView
    if name in ("DeltaView", "delta_view"):
        from . import delta

        return getattr(delta, name)
    if name == "MarkdownView":
        from .markdown import MarkdownView

        return MarkdownView
    if name == "ControlsPanel":
        from .controls import ControlsPanel

        return ControlsPanel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def auto_view(*, max_tokens: int = 4, max_delay: float = 0.05) -> View:
    """A new view of the kind :func:`view_kind` picks: a :class:`MarkdownView` in a Jupyter
    kernel, a :class:`ConsoleView` elsewhere.

    The Markdown view's adaptive policy then sets the flush settings from the measured token
    rate and render lag as each stream runs; the console view keeps the settings given.

    Args:
        max_tokens: update the screen after this many tokens are waiting.
        max_delay: update the screen once the first waiting token has waited this long (seconds).

    Raises:
        UsageError: ``STREAMKIT_VIEW`` is invalid, or a setting is out of range.
    """
    if view_kind() == "widget":
        from .markdown import MarkdownView

        return MarkdownView(max_tokens=max_tokens, max_delay=max_delay)
    return ConsoleView(max_tokens=max_tokens, max_delay=max_delay)


def named_view(name: str) -> View:
    """A new view by name: ``auto``, ``widget``, ``markdown``, ``text`` or ``console``.

    The module docstring says what each one is.

    Raises:
        UsageError: an unknown name (or an invalid ``STREAMKIT_VIEW`` for ``auto``/``text``).
    """
    if name == "auto":
        return auto_view()
    if name in ("widget", "markdown"):
        from .markdown import MarkdownView

        return MarkdownView()
    if name == "text":
        from .delta import delta_view

        return delta_view()
    if name == "console":
        return ConsoleView()
    choices = ", ".join(repr(n) for n in _VIEW_NAMES)
    raise UsageError(f"view={name!r} is unknown: use {choices} or a View")


def resolve_view(view: View | ViewName | None) -> View | None:
    """The view a ``view=`` argument asks for: a View as given, a name made by
    :func:`named_view`, None for no display."""
    if view is None:
        return None
    if isinstance(view, str):
        return named_view(view)
    return view

"""The JupyterLab view: an ipywidgets panel that shows a stream live, with a Stop button.

Layout, top to bottom: a header (model · streaming… / completed / stopped / failed, or what a
retry is doing: "connection lost after 37 tokens — resuming in 1.2 s (2/5)") with the Stop
button beside it, the text, and a status area filled on finish (an error line naming the error
class and message when the stream failed, then the one-line summary).

Traffic is kept low on purpose: the text is one ``ipywidgets.HTML`` whose ``value`` is set once per
flush (not per token; ~250 µs of kernel CPU per set, and each message costs the browser too), and
the other widgets change only on start, on Stop and on finish. Saved notebooks and nbval read the
``text/plain`` of the output, which holds the transcript and the status line: it is written once
more on finish through the display handle, so the stored output is the final transcript.
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets
from IPython.core.interactiveshell import InteractiveShell
from IPython.display import DisplayHandle, display

from ..events import StreamRetry
from ..result import StreamResult
from ._base import BufferedView, failure_line, retry_line

__all__ = ["WidgetView"]

# pre-wrap keeps the model's newlines and still wraps long lines; break-word stops a long URL
# from widening the cell.
PRE_OPEN = '<pre style="white-space:pre-wrap;word-break:normal;overflow-wrap:break-word;margin:0">'
PRE_CLOSE = "</pre>"
_ERROR_STYLE = "color:var(--jp-error-color1,#c62828);font-weight:bold"
_MUTED_STYLE = "color:var(--jp-ui-font-color2,#616161)"
_WARN_STYLE = "color:var(--jp-warn-color1,#e65100)"


def shell_active() -> bool:
    """Whether an IPython shell exists to display into (a kernel, or IPython in a terminal)."""
    # Without a shell, IPython's display() falls back to print(), which would write the raw
    # bundle to stdout: a WidgetView driven from a plain script or a test stays silent instead.
    return InteractiveShell.initialized()


class WidgetView(BufferedView):
    """Shows a stream in JupyterLab as it arrives, with a Stop button and a summary on finish.

    The view displays itself on the first :meth:`start` unless it was displayed already (e.g. as
    the last expression of a cell), and can be reused: every :meth:`start` clears it.

    Args:
        max_tokens: update the text after this many tokens are waiting.
        max_delay: update the text once the first waiting token has waited this long (seconds).
        clock: the clock for flush times (``time.perf_counter``).

    Attributes:
        header: the ``model · status`` line.
        stop_button: calls ``on_stop``; enabled only while a stream runs and can be stopped.
        text_widget: the ``ipywidgets.HTML`` holding the text (observe its ``value``).
        status_widget: the error line and the summary, set on finish.
        widget: the whole panel (an ``ipywidgets.VBox`` with the CSS class ``streamkit-view``).
    """

    def _on_init(self) -> None:
        self.header = widgets.HTML(value=self._header_html("idle"))
        self.stop_button = widgets.Button(
            description="Stop",
            icon="stop",
            tooltip="Stop this stream (keeps the text received so far)",
            disabled=True,
            layout=widgets.Layout(width="auto", margin="0 0 0 1em"),
        )
        self.stop_button.on_click(self._on_click)
        self.text_widget = widgets.HTML(value=PRE_OPEN + PRE_CLOSE)
        self.status_widget = widgets.HTML(value="")
        self.widget = widgets.VBox(
            [
                widgets.HBox(
                    [self.header, self.stop_button],
                    layout=widgets.Layout(align_items="center"),
                ),
                self.text_widget,
                self.status_widget,
            ]
        )
        # A stable hook for styling and for browser tests: every view's panel (DeltaView's too)
        # carries this class, and its text is the one <pre> inside.
        self.widget.add_class("streamkit-view")
        self._escaped = ""
        self._status_text = ""
        self._retrying = False
        self._handle: DisplayHandle | None = None

    # -- BufferedView hooks ------------------------------------------------------------------

    def _on_start(self) -> None:
        self._escaped = ""
        self._status_text = ""
        self._retrying = False
        self.text_widget.value = PRE_OPEN + PRE_CLOSE
        self.status_widget.value = ""
        self.header.value = self._header_html("streaming…")
        self.stop_button.disabled = not self.can_stop
        if self._handle is None and shell_active():
            self._ipython_display_()

    def _render(self, new_text: str) -> None:
        # Escaping piece by piece equals escaping the whole (it maps single characters), so
        # each flush escapes only its new text. One .value set, one message, per flush.
        self._escaped += html.escape(new_text, quote=False)
        self.text_widget.value = PRE_OPEN + self._escaped + PRE_CLOSE
        if self._retrying:  # text flows again: the retry worked
            self._retrying = False
            self.header.value = self._header_html(f"streaming… (retried {self.retries}×)")

    def _on_retry(self, event: StreamRetry) -> None:
        # One header update per retry; the text stays (a resume continues it) unless the
        # retry starts over, when what was shown is void.
        self._retrying = True
        if event.discarded:
            self._escaped = ""
            self.text_widget.value = PRE_OPEN + PRE_CLOSE
        line = html.escape(retry_line(event))
        self.header.value = self._header_html(f'<span style="{_WARN_STYLE}">{line}</span>')

    def _on_finish(self, result: StreamResult) -> None:
        self.stop_button.disabled = True
        self._retrying = False
        self.header.value = self._header_html(result.status)
        summary = result.summary()
        failed = failure_line(result)
        parts = []
        if result.status == "failed" and result.error is not None:
            parts.append(
                f'<div style="{_ERROR_STYLE}">'
                f"{html.escape(result.error.kind)}: {html.escape(result.error.message)}</div>"
            )
        parts.append(f'<div style="{_MUTED_STYLE}">{html.escape(summary)}</div>')
        self.status_widget.value = "".join(parts)
        self._status_text = summary if failed is None else f"{failed}\n{summary}"
        if self._handle is not None and shell_active():
            # Once per stream: rewrite the stored output so the notebook keeps the final
            # transcript as text/plain. A raw bundle, because passing self would go through
            # _ipython_display_ and add a second output instead of updating this one.
            self._handle.update(  # type: ignore[no-untyped-call]  # IPython is untyped
                self._repr_mimebundle_(), raw=True
            )

    # -- display -----------------------------------------------------------------------------

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        """The widget's bundle, with ``text/plain`` holding the transcript and the status line."""
        bundle: dict[str, Any] = self.widget._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = self.plain_text()
        return bundle

    def _ipython_display_(self) -> None:
        """Display the panel with a display id, so :meth:`finish` can update the stored output."""
        # IPython calls this for display(view) and for a cell ending in `view`; publishing the
        # bundle ourselves is what gives every display a handle to update.
        self._handle = display(  # type: ignore[no-untyped-call]  # IPython is untyped
            self._repr_mimebundle_(), raw=True, display_id=True
        )

    def plain_text(self) -> str:
        """The transcript so far plus the status line: what a saved notebook or a log shows."""
        if not self.model and not self.text and not self.streaming:
            return "WidgetView (no stream yet)"
        status = self._status_text or f"[{self.model or 'stream'} · streaming…]"
        text = self.text
        if not text:
            return status
        return text + ("" if text.endswith("\n") else "\n") + status

    def close(self) -> None:
        """Close the panel's widgets: their frontend views disappear and the view is done."""
        self.flush()
        self.streaming = False
        for child in (self.header, self.stop_button, self.text_widget, self.status_widget):
            child.close()
        for box in (self.widget.children[0], self.widget):
            box.close()

    # -- internals ---------------------------------------------------------------------------

    def _header_html(self, status: str) -> str:
        model = html.escape(self.model) if self.model else "stream"
        if status == "failed":
            status = f'<span style="{_ERROR_STYLE}">failed</span>'
        return f'<b>{model}</b> <span style="{_MUTED_STYLE}">· {status}</span>'

    def _on_click(self, _button: widgets.Button) -> None:
        if not self.can_stop:
            return
        # Disable first: a second click while the runner winds down must not stop twice.
        self.stop_button.disabled = True
        self.header.value = self._header_html("stopping…")
        self.stop()

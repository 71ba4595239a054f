"""A chat box for notebooks: an input, Send / Stop / Regenerate, and the conversation so far.

:class:`ChatBox` binds a :class:`~streamkit.state.ChatState` (the history sent with every prompt,
the reply being streamed, the last error) to a few ipywidgets. Each user turn and each reply is
rendered as sanitized Markdown (:class:`~streamkit.render.markdown.MarkdownText`, and a
:class:`~streamkit.render.markdown.MarkdownView` per reply, so a reply streams live with its
figures and copy buttons). Replies run with ``start_chat``, as a background task: the cell that
shows the box returns at once and the kernel stays free for the Stop button and the next cell.

Any chat source works: a :class:`~streamkit.Client` on any transport, or a
:class:`~streamkit.LoadBalancer`. :attr:`ChatBox.messages` is the conversation as plain data
(OpenAI's list of ``{"role", "content"}`` dicts), to save and to pass back as ``messages=``.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import ipywidgets as widgets
from IPython.display import display

from ..errors import UsageError
from ..state import Change, ChatMessage, ChatState
from .markdown import MarkdownText, MarkdownView
from .widget import shell_active

if TYPE_CHECKING:
    from ..client import ChatTask, ViewArg

__all__ = ["ChatBox", "ChatSource"]

_ERROR_STYLE = "color:var(--jp-error-color1,#c62828)"
_LABEL_STYLE = "color:var(--jp-ui-font-color2,#616161);font-size:var(--jp-ui-font-size0,11px)"


class ChatSource(Protocol):
    """Anything that starts a chat in the background: a Client or a LoadBalancer."""

    def start_chat(
        self, prompt: str, *, view: ViewArg = ..., state: ChatState | None = ..., **request: Any
    ) -> ChatTask:
        """Start streaming a reply to ``prompt`` into ``view``; return at once."""
        ...


class ChatBox:
    """A multi-turn chat in a notebook: type, Send, watch the reply stream as Markdown.

    While a reply streams, Stop replaces Send (the text so far is kept, and joins the
    history). Regenerate drops the last reply and asks again with the same prompt.

    Args:
        client: where replies come from (default: the bundled server's client).
        system: a system prompt sent first with every request.
        messages: a conversation to continue (``[{"role": ..., "content": ...}, ...]``, e.g. a
            saved :attr:`messages`); a leading system message becomes ``system``.
        state: a :class:`~streamkit.state.ChatState` to use (instead of ``system``/``messages``).
        **request: sent with every request (``model``, ``max_tokens``, ``seed``,
            ``extra_body``, …).

    Attributes:
        state: the conversation (subscribe to it to follow changes).
        task: the current or last reply's :class:`~streamkit.client.ChatTask` (None before the
            first).
        views: a :class:`MarkdownView` per reply shown, in order.
        widget: the whole box (an ``ipywidgets.VBox`` with the CSS class ``streamkit-chat``).
    """

    def __init__(
        self,
        client: ChatSource | None = None,
        *,
        system: str | None = None,
        messages: Iterable[Mapping[str, Any]] | None = None,
        state: ChatState | None = None,
        **request: Any,
    ) -> None:
        if client is None:
            from ..shortcuts import default_client

            client = default_client()
        self.client = client
        self.request = request
        if state is not None and (system is not None or messages is not None):
            raise UsageError("pass either state= or system=/messages=, not both")
        self.state = state if state is not None else ChatState(system=system)
        self.task: ChatTask | None = None
        self.views: list[MarkdownView] = []
        # One entry per exchange shown: the user turn's widget and the reply's (or None).
        self._turns: list[list[widgets.Widget]] = []

        self.history_box = widgets.VBox()
        self.input = widgets.Textarea(
            placeholder="Message (Send to submit)",
            rows=2,
            layout=widgets.Layout(flex="1 1 auto", width="auto"),
        )
        self.send_button = widgets.Button(
            description="Send", icon="paper-plane", button_style="primary"
        )
        self.stop_button = widgets.Button(
            description="Stop", icon="stop", layout=widgets.Layout(display="none")
        )
        self.regenerate_button = widgets.Button(
            description="Regenerate", icon="redo", disabled=True
        )
        self.status = widgets.HTML("")
        for button in (self.send_button, self.stop_button, self.regenerate_button):
            button.layout.width = "auto"
            button.layout.margin = "0 0 0 0.5em"
        self.send_button.on_click(lambda _b: self.send())
        self.stop_button.on_click(lambda _b: self.stop())
        self.regenerate_button.on_click(lambda _b: self.regenerate())
        controls = widgets.HBox(
            [self.input, self.send_button, self.stop_button, self.regenerate_button],
            layout=widgets.Layout(align_items="flex-start", margin="0.5em 0 0 0"),
        )
        self.widget = widgets.VBox([self.history_box, controls, self.status])
        self.widget.add_class("streamkit-chat")
        self._unsubscribe = self.state.subscribe(self._on_change)

        if messages is not None:
            self._load(messages)
        elif self.state.history:
            self._show_history()

    # -- the public face ---------------------------------------------------------------------

    @property
    def messages(self) -> list[dict[str, str]]:
        """The conversation as plain data: system (if any), then every turn, as OpenAI takes it."""
        return self.state.messages()

    @property
    def streaming(self) -> bool:
        """Whether a reply is streaming now."""
        return self.state.is_streaming

    def send(self, prompt: str | None = None) -> ChatTask | None:
        """Send ``prompt`` (default: what the input holds) and stream the reply below it.

        Returns the reply's task (await it for the result), or None when there was nothing to
        send or a reply is still streaming. Needs a running event loop (a notebook has one).
        """
        if self.state.is_streaming:
            return None
        text = self.input.value if prompt is None else prompt
        if not text.strip():
            return None
        if prompt is None:
            self.input.value = ""
        user = self._user_turn(text)
        view = MarkdownView(embedded=True)  # shown in the box, not in the cell that sent
        view.stop_button.layout.display = "none"  # the box's own Stop replaces it
        self.views.append(view)
        self._turns.append([user, view.widget])
        self.history_box.children = (*self.history_box.children, user, view.widget)
        self.task = self.client.start_chat(text, view=view, state=self.state, **self.request)
        return self.task

    def stop(self) -> None:
        """Stop the reply that is streaming (its text so far is kept); no-op when idle."""
        if self.task is not None and not self.task.done():
            self.stop_button.disabled = True
            self.task.stop()

    def regenerate(self) -> ChatTask | None:
        """Drop the last reply and send its prompt again; None when there is nothing to redo."""
        history = self.state.history
        if self.state.is_streaming or not history:
            return None
        if history[-1].role == "assistant":
            history.pop()
        if not history or history[-1].role != "user":
            return None
        prompt = history.pop().content
        if self._turns:
            dropped = self._turns.pop()
            self.history_box.children = tuple(
                child for child in self.history_box.children if child not in dropped
            )
        return self.send(prompt)

    def clear(self) -> None:
        """Forget the conversation (the system prompt stays) and empty the box."""
        if self.state.is_streaming:
            self.stop()
        self.state.clear()
        self._turns = []
        self.history_box.children = ()
        self.status.value = ""

    def close(self) -> None:
        """Close every widget of the box and stop following the state."""
        self._unsubscribe()
        for view in self.views:
            view.close()
        for child in (*self.history_box.children, self.input, self.status):
            child.close()
        for button in (self.send_button, self.stop_button, self.regenerate_button):
            button.close()
        self.widget.close()

    # -- display -----------------------------------------------------------------------------

    def plain_text(self) -> str:
        """The conversation as text: what a saved notebook or a log shows."""
        lines = [f"{m['role']}: {m['content']}" for m in self.messages]
        if self.state.is_streaming:
            lines.append(f"assistant: {self.state.current_text}…")
        return "\n".join(lines) if lines else "ChatBox (no messages yet)"

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle: dict[str, Any] = self.widget._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = self.plain_text()
        return bundle

    def _ipython_display_(self) -> None:
        if shell_active():
            display(self._repr_mimebundle_(), raw=True)  # type: ignore[no-untyped-call]

    def __repr__(self) -> str:
        status = "streaming" if self.state.is_streaming else "idle"
        return f"<ChatBox {status}, {len(self.state.history)} messages>"

    # -- internals ---------------------------------------------------------------------------

    def _user_turn(self, text: str) -> widgets.Widget:
        label = widgets.HTML(f'<span style="{_LABEL_STYLE}">You</span>')
        body = MarkdownText(markdown=text)
        turn = widgets.VBox([label, body], layout=widgets.Layout(margin="0.6em 0 0.2em 0"))
        turn.add_class("streamkit-chat-user")
        return turn

    def _load(self, messages: Iterable[Mapping[str, Any]]) -> None:
        for message in messages:
            role, content = message.get("role"), message.get("content")
            if not isinstance(role, str) or not isinstance(content, str):
                raise UsageError(f"each message needs a string role and content, got {message!r}")
            if role == "system" and not self.state.history:
                self.state.system = content
            else:
                self.state.history.append(ChatMessage(role, content))
        self._show_history()

    def _show_history(self) -> None:
        # A conversation loaded from data: rendered once, no streams.
        children: list[widgets.Widget] = []
        for message in self.state.history:
            if message.role == "user":
                turn = self._user_turn(message.content)
                self._turns.append([turn])
            else:
                turn = widgets.VBox(
                    [
                        widgets.HTML(
                            f'<span style="{_LABEL_STYLE}">{html.escape(message.role)}</span>'
                        ),
                        MarkdownText(markdown=message.content),
                    ]
                )
                if self._turns:
                    self._turns[-1].append(turn)
                else:
                    self._turns.append([turn])
            children.append(turn)
        self.history_box.children = tuple(children)
        self._sync_buttons()

    def _on_change(self, state: ChatState, change: Change) -> None:
        if change == "token":
            return  # per token: the reply's own view shows it
        if change == "start":
            self.status.value = ""
        elif change == "error" and state.last_error is not None and not _stopped(state):
            error = state.last_error
            self.status.value = (
                f'<div style="{_ERROR_STYLE}">{html.escape(error.kind)}: '
                f"{html.escape(str(error))}</div>"
            )
        self._sync_buttons()

    def _sync_buttons(self) -> None:
        streaming = self.state.is_streaming
        self.send_button.layout.display = "none" if streaming else ""
        self.stop_button.layout.display = "" if streaming else "none"
        self.stop_button.disabled = not streaming
        history = self.state.history
        self.regenerate_button.disabled = streaming or not any(m.role == "user" for m in history)


def _stopped(state: ChatState) -> bool:
    # Stop pressed: the reply's own header says "stopped"; it is not an error to report.
    return state.last_result is not None and state.last_result.status == "stopped"

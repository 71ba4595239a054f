"""The batching controls: sliders that tune a live view's buffer while its stream runs.

A :class:`ControlsPanel` observes one :class:`~streamkit.render.BufferedView`: its sliders set
the view's :class:`~streamkit.batching.TokenBuffer` (``max_tokens``, ``max_delay``) the moment
they move, a preset menu picks one of :data:`~streamkit.batching.PRESETS`, and an *adaptive*
switch hands the buffer to the view's :class:`~streamkit.batching.AdaptivePolicy` (a
:class:`~streamkit.render.delta.DeltaView` has one). Two more sliders set the bundled server's
speed and jitter for the *next* request (:meth:`ControlsPanel.request_overrides`). A readout shows
flushes per second and the render lag the browser acknowledged, a few times a second.

The panel touches the view's buffer and settings only: never a transport or a connection.

Nothing is clamped silently. Every number has a slider (bounded) and a text box next to it (type an
exact value); a value outside the control's range, or one the buffer refuses, is refused with a
message in the panel and the old value stays: the slider and the box never show a setting the
buffer does not have. ipywidgets' own sliders *clamp* an out-of-range ``.value``; these raise a
``TraitError`` (and show the message) instead, so code that sets ``panel.max_tokens.value = 0``
learns it was refused.

For the sliders to act while a stream runs, the kernel must be free to hear them: run the stream
with :func:`streamkit.start_chat` (a background task), not in a cell that blocks.
"""

from __future__ import annotations

import asyncio
import html
import math
import time
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
import traitlets
from IPython.display import display

from ..batching import PRESETS, AdaptivePolicy
from ..errors import UsageError
from ._base import BufferedView

__all__ = ["ControlsPanel"]

Number = int | float

_ERROR_STYLE = "color:var(--jp-error-color1,#c62828)"
_MUTED_STYLE = "color:var(--jp-ui-font-color2,#616161)"
_LABEL_WIDTH = "13em"
_CUSTOM = "custom"

# The panel's ranges. The buffer accepts more (up to 10,000 tokens and 10 s): these are the
# ranges worth a slider; code can still set the buffer beyond them.
TOKENS_RANGE = (1, 500)
DELAY_MS_RANGE = (0, 1000)
SPEED_RANGE = (1.0, 10_000.0)  # tokens/s; the bundled server takes up to 100,000
JITTER_RANGE = (0.0, 1.0)


def _refusal(label: str, value: object, low: Number, high: Number, unit: str) -> str:
    return f"{label}: {value!r} refused: must be between {low:g} and {high:g}{unit}"


class _Strict:
    """Mixin for a slider that refuses an out-of-range value instead of clamping it."""

    min: Number
    max: Number
    _tolerance = 0.0  # relative slack at the bounds

    def __init__(
        self, *, label: str, unit: str, on_refused: Callable[[str], None], **kw: Any
    ) -> None:
        # Set before super().__init__, which validates the initial value.
        self._label, self._unit, self._on_refused = label, unit, on_refused
        super().__init__(**kw)

    def _bounds(self) -> tuple[float, float]:
        return self.min, self.max

    @traitlets.validate("value")
    def _validate_value(self, proposal: Any) -> Any:
        value = proposal["value"]
        low, high = self._bounds()
        slack = self._tolerance
        if math.isnan(value) or not low * (1 - slack) <= value <= high * (1 + slack):
            message = _refusal(self._label, value, low, high, self._unit)
            self._on_refused(message)
            raise traitlets.TraitError(message)
        return value


class _StrictIntSlider(_Strict, widgets.IntSlider):  # type: ignore[misc]  # ipywidgets is untyped
    """An IntSlider that refuses an out-of-range value instead of clamping it."""


class _StrictFloatSlider(_Strict, widgets.FloatSlider):  # type: ignore[misc]
    """A FloatSlider that refuses an out-of-range value instead of clamping it."""


class _StrictLogSlider(_Strict, widgets.FloatLogSlider):  # type: ignore[misc]
    """A FloatLogSlider (``min``/``max`` are exponents) that refuses instead of clamping."""

    base: float
    _tolerance = 1e-9  # base**exponent is not exact in floating point

    def _bounds(self) -> tuple[float, float]:
        return self.base**self.min, self.base**self.max


class _NumberControl:
    """One number shown twice: a bounded slider and a text box for an exact value.

    Changes from either go through ``apply`` (which may raise :class:`UsageError`); a refused
    change puts both back to the value in force and shows the reason.
    """

    def __init__(
        self,
        *,
        label: str,
        slider_cls: type[_Strict],
        low: Number,
        high: Number,
        unit: str,
        integer: bool,
        apply: Callable[[Number], None],
        show_error: Callable[[str], None],
        current: Callable[[], Number] | None = None,
        **slider_kw: Any,
    ) -> None:
        self.label = label
        slider_kw.setdefault("min", low)  # a log slider passes exponents instead
        slider_kw.setdefault("max", high)
        # The slider's own readout is off: it would clamp typed values in the browser.
        slider: widgets.Widget = slider_cls(
            label=label, unit=unit, on_refused=show_error, readout=False, **slider_kw
        )
        self.slider = slider
        self.low, self.high, self.unit, self.integer = low, high, unit, integer
        self._apply = apply
        self._show_error = show_error
        self._current = current
        self._quiet = False
        self.box = widgets.Text(
            value=self._format(slider.value),
            continuous_update=False,  # one change on Enter or leaving the box, not per keystroke
            layout=widgets.Layout(width="6em"),
        )
        slider.observe(self._on_slider, names="value")
        self.box.observe(self._on_box, names="value")
        self.row = widgets.HBox(
            [widgets.Label(label, layout=widgets.Layout(width=_LABEL_WIDTH)), slider, self.box]
        )

    @property
    def value(self) -> Number:
        """The value in force (the buffer's, for a buffer setting; else the slider's)."""
        if self._current is not None:
            return self._current()
        value: Number = self.slider.value
        return value

    def _format(self, value: Number) -> str:
        if self.integer and value == int(value):
            return str(int(value))
        if self.integer:
            return f"{value:.1f}"  # e.g. an adaptive delay of 202.5 ms
        return f"{value:.4g}"

    def show(self, value: Number) -> None:
        """Show ``value`` (already in force elsewhere) without applying it again."""
        self._quiet = True
        try:
            # A value beyond the slider's range (code set the buffer further) is shown exactly
            # in the box; the slider rests at its end.
            self.slider.value = min(max(value, self.low), self.high)
            self.box.value = self._format(value)
        finally:
            self._quiet = False

    def _on_slider(self, change: dict[str, Any]) -> None:
        if self._quiet:
            return
        try:
            self._apply(change["new"])
        except UsageError as error:
            self._show_error(str(error))
            self.show(self.value)  # what is in force (for a buffer setting: the buffer's)
            return
        self._quiet = True
        try:
            self.box.value = self._format(change["new"])
        finally:
            self._quiet = False

    def _on_box(self, change: dict[str, Any]) -> None:
        if self._quiet:
            return
        text = str(change["new"]).strip()
        kind = "a whole number" if self.integer else "a number"
        try:
            number: Number = int(text) if self.integer else float(text)
        except ValueError:
            number = math.nan
        if math.isnan(number):
            self._show_error(
                f"{self.label}: {text!r} refused: must be {kind} between "
                f"{self.low:g} and {self.high:g}{self.unit}"
            )
            self.show(self.value)
            return
        if not self.low <= number <= self.high:
            self._show_error(_refusal(self.label, number, self.low, self.high, self.unit))
            self.show(self.value)
            return
        if number == self.slider.value:
            self.show(number)  # normalise the text ("020" -> "20"); nothing changes
            return
        self.slider.value = number  # -> _on_slider -> apply (or refuse and restore)


class ControlsPanel:
    """Sliders for a view's batching, the next request's server speed, and a live readout.

    Args:
        view: the view to tune (any :class:`~streamkit.render.BufferedView`; ``adaptive`` needs
            one with a ``policy``, such as :class:`~streamkit.render.delta.DeltaView`).
        speed: the bundled server's tokens per second for the next request.
        jitter: the spread of its inter-token gaps for the next request (0 to 1).
        refresh_every: seconds between readout updates while a loop runs (0: only
            :meth:`refresh`).
        clock: the view's clock (``time.perf_counter`` unless the view was given another).

    Attributes:
        max_tokens: the max-tokens-per-flush slider (1 to 500); ``max_tokens_box`` types a value.
        max_delay: the max-delay slider in ms (0 to 1000); ``max_delay_box`` types a value.
        preset: the preset menu (``fast``, ``medium``, ``slow``, ``custom``).
        adaptive: the switch that hands the buffer to the view's policy.
        speed: the next request's tokens/s (log slider, 1 to 10,000); ``speed_box`` types one.
        jitter: the next request's jitter (0 to 1); ``jitter_box`` types one.
        readout: flushes/s, token rate, render lag p50/p99 and the settings in force.
        message: the last refusal, in red (empty when the last change was accepted).
        widget: the whole panel (an ``ipywidgets.VBox``).

    Raises:
        UsageError: ``speed`` or ``jitter`` is out of range.
    """

    def __init__(
        self,
        view: BufferedView,
        *,
        speed: float = 80.0,
        jitter: float = 0.15,
        refresh_every: float = 0.25,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.view = view
        self._clock = clock
        self._quiet = False
        self._refresh_every = float(refresh_every)
        self._timer: asyncio.TimerHandle | None = None
        self._last_readout = ""
        for name, value, (low, high) in (
            ("speed", speed, SPEED_RANGE),
            ("jitter", jitter, JITTER_RANGE),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise UsageError(f"{name}={value!r} is not a number: must be {low:g} to {high:g}")
            if not low <= value <= high:
                raise UsageError(_refusal(name, value, low, high, ""))

        self.message = widgets.HTML(value="")
        buffer = view.buffer
        self._tokens = _NumberControl(
            label="max tokens per flush",
            slider_cls=_StrictIntSlider,
            value=min(max(buffer.max_tokens, TOKENS_RANGE[0]), TOKENS_RANGE[1]),
            low=TOKENS_RANGE[0],
            high=TOKENS_RANGE[1],
            unit=" tokens",
            integer=True,
            apply=self._apply_max_tokens,
            show_error=self._show_error,
            current=lambda: self.view.buffer.max_tokens,
        )
        self._delay = _NumberControl(
            label="max delay (ms)",
            slider_cls=_StrictIntSlider,
            value=min(max(round(buffer.max_delay * 1000), 0), DELAY_MS_RANGE[1]),
            low=DELAY_MS_RANGE[0],
            high=DELAY_MS_RANGE[1],
            unit=" ms",
            integer=True,
            apply=self._apply_max_delay_ms,
            show_error=self._show_error,
            current=lambda: round(self.view.buffer.max_delay * 1000, 3),
        )
        self._speed = _NumberControl(
            label="server tokens/s (next)",
            slider_cls=_StrictLogSlider,
            value=float(speed),
            base=10,
            min=math.log10(SPEED_RANGE[0]),
            max=math.log10(SPEED_RANGE[1]),
            step=0.01,
            low=SPEED_RANGE[0],
            high=SPEED_RANGE[1],
            unit=" tokens/s",
            integer=False,
            apply=self._apply_nothing,
            show_error=self._show_error,
        )
        self._jitter = _NumberControl(
            label="server jitter (next)",
            slider_cls=_StrictFloatSlider,
            value=float(jitter),
            step=0.05,
            low=JITTER_RANGE[0],
            high=JITTER_RANGE[1],
            unit="",
            integer=False,
            apply=self._apply_nothing,
            show_error=self._show_error,
        )
        self.max_tokens = self._tokens.slider
        self.max_tokens_box = self._tokens.box
        self.max_delay = self._delay.slider
        self.max_delay_box = self._delay.box
        self.speed = self._speed.slider
        self.speed_box = self._speed.box
        self.jitter = self._jitter.slider
        self.jitter_box = self._jitter.box

        self.preset = widgets.Dropdown(
            options=[*PRESETS, _CUSTOM],
            value=self._matching_preset(),
            description="preset",
            layout=widgets.Layout(width="14em"),
        )
        self.preset.observe(self._on_preset, names="value")
        policy = self._policy()
        self.adaptive = widgets.Checkbox(
            value=bool(getattr(view, "adaptive", False)) and policy is not None,
            description="adaptive",
            indent=False,
            disabled=policy is None,
            tooltip="let the view's policy pick the settings from the token rate and render lag"
            if policy is not None
            else "this view has no adaptive policy (use a DeltaView)",
            layout=widgets.Layout(width="auto", margin="0 0 0 2em"),
        )
        self.adaptive.observe(self._on_adaptive, names="value")
        self.readout = widgets.HTML(value="")
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.preset, self.adaptive]),
                self._tokens.row,
                self._delay.row,
                widgets.HTML(value=f'<span style="{_MUTED_STYLE}">next request</span>'),
                self._speed.row,
                self._jitter.row,
                self.readout,
                self.message,
            ],
            layout=widgets.Layout(border="1px solid var(--jp-border-color2,#e0e0e0)"),
        )
        self._show_settings()  # exact values in the boxes, even beyond the sliders' ranges
        self._sync_enabled()
        self.refresh()
        self._arm()

    # -- what a notebook uses ------------------------------------------------------------------

    def request_overrides(self) -> dict[str, Any]:
        """Keyword arguments for the next request: the bundled server's speed and jitter.

        ``sk.start_chat(prompt, view=view, **panel.request_overrides())``; the server reads them
        from the ``streamkit`` body field (``extra_body={"streamkit": {...}}``). To send other
        body fields too, add them to the returned ``extra_body`` (a fresh dict on every call).
        """
        return {
            "extra_body": {
                "streamkit": {
                    "tokens_per_second": float(self._speed.value),
                    "jitter": float(self._jitter.value),
                }
            }
        }

    def refresh(self) -> None:
        """Update the readout (and, while adaptive, the sliders) from the view now."""
        if bool(self.adaptive.value):
            self._show_settings()
        text = self._readout_html()
        if text != self._last_readout:
            # Only a changed readout costs a message to the browser.
            self._last_readout = text
            self.readout.value = text

    def close(self) -> None:
        """Stop the readout timer and close the panel's widgets."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._close_all(self.widget)

    def _close_all(self, widget: widgets.Widget) -> None:
        for child in getattr(widget, "children", ()):
            self._close_all(child)
        widget.close()

    # -- display ---------------------------------------------------------------------------------

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle: dict[str, Any] = self.widget._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = repr(self)
        return bundle

    def _ipython_display_(self) -> None:
        display(self._repr_mimebundle_(), raw=True)  # type: ignore[no-untyped-call]

    def __repr__(self) -> str:
        buffer = self.view.buffer
        mode = "adaptive" if self.adaptive.value else str(self.preset.value)
        return (
            f"ControlsPanel({mode}: max_tokens={buffer.max_tokens}, "
            f"max_delay={buffer.max_delay * 1000:g} ms)"
        )

    # -- the settings -----------------------------------------------------------------------------

    def _policy(self) -> AdaptivePolicy | None:
        policy = getattr(self.view, "policy", None)
        return policy if isinstance(policy, AdaptivePolicy) else None

    def _apply_max_tokens(self, value: Number) -> None:
        self.view.buffer.max_tokens = int(value)  # the buffer validates
        self._manual_change()

    def _apply_max_delay_ms(self, value: Number) -> None:
        self.view.buffer.max_delay = float(value) / 1000
        self._manual_change()

    def _apply_nothing(self, value: Number) -> None:
        """The server settings apply to the next request only: nothing changes now."""
        del value
        self._show_error("")

    def _manual_change(self) -> None:
        # A hand on a slider overrides the policy: it stops adapting, or it would undo the move.
        self._show_error("")
        if self.adaptive.value:
            self.adaptive.value = False
        self._quiet = True
        try:
            self.preset.value = self._matching_preset()
        finally:
            self._quiet = False

    def _matching_preset(self) -> str:
        buffer = self.view.buffer
        for name, settings in PRESETS.items():
            if (settings.max_tokens, settings.max_delay) == (buffer.max_tokens, buffer.max_delay):
                return name
        return _CUSTOM

    def _on_preset(self, change: dict[str, Any]) -> None:
        if self._quiet or change["new"] == _CUSTOM:
            return  # "custom" keeps the settings in force; the sliders change them
        if self.adaptive.value:
            self.adaptive.value = False
        PRESETS[change["new"]].apply(self.view.buffer)
        self._show_settings()
        self._show_error("")

    def _on_adaptive(self, change: dict[str, Any]) -> None:
        policy = self._policy()
        if policy is None:
            if change["new"]:
                self._show_error("adaptive: this view has no adaptive policy (use a DeltaView)")
                self.adaptive.value = False
            return
        self.view.adaptive = bool(change["new"])  # type: ignore[attr-defined]  # a DeltaView's
        if change["new"]:
            policy.apply(self.view.buffer)
            self._show_settings()
            self._quiet = True
            try:
                self.preset.value = _CUSTOM
            finally:
                self._quiet = False
        self._sync_enabled()

    def _sync_enabled(self) -> None:
        # While the policy steers, the sliders follow it and cannot be moved by hand.
        adaptive = bool(self.adaptive.value)
        for control in (self._tokens, self._delay):
            control.slider.disabled = adaptive
            control.box.disabled = adaptive

    def _show_settings(self) -> None:
        self._tokens.show(self._tokens.value)
        self._delay.show(self._delay.value)

    def _show_error(self, message: str) -> None:
        value = f'<span style="{_ERROR_STYLE}">{html.escape(message)}</span>' if message else ""
        if self.message.value != value:
            self.message.value = value

    # -- the readout ------------------------------------------------------------------------------

    def _readout_html(self) -> str:
        view = self.view
        log = view.flush_log
        now = self._clock()
        if view.streaming:
            recent = 0
            for flushed_at, _chars in reversed(log):
                if flushed_at < now - 1.0:
                    break
                recent += 1
            flush_rate = f"{recent} flushes/s"
        elif len(log) > 1:
            span = log[-1][0] - log[0][0]
            rate = (len(log) - 1) / span if span > 0 else 0.0
            flush_rate = f"{len(log)} flushes ({rate:.1f}/s)"
        else:
            flush_rate = f"{len(log)} flushes"
        parts = [flush_rate]
        policy = self._policy()
        if policy is not None and policy.token_rate is not None:
            parts.append(f"~{policy.token_rate:.0f} tokens/s")
        lags: list[float] = list(getattr(view, "render_lags", []))[-200:]
        if lags:
            p50, p99 = _percentile(lags, 50), _percentile(lags, 99)
            parts.append(
                f"render lag p50 {p50 * 1000:.0f} ms · p99 {p99 * 1000:.0f} ms (last {len(lags)})"
            )
        elif hasattr(view, "render_lags"):
            parts.append("render lag: no acknowledgements yet (needs a browser showing the view)")
        buffer = view.buffer
        parts.append(f"now {buffer.max_tokens} tokens / {buffer.max_delay * 1000:g} ms")
        return f'<span style="{_MUTED_STYLE}">{html.escape(" · ".join(parts))}</span>'

    def _arm(self) -> None:
        if self._refresh_every <= 0:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a plain script): refresh() by hand
        self._timer = loop.call_later(self._refresh_every, self._tick)

    def _tick(self) -> None:
        self._timer = None
        try:
            self.refresh()
        finally:
            self._arm()


def _percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile by linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)

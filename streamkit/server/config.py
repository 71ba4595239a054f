"""Every option of the bundled server, once: :class:`ServerConfig`, taken by the app and every way
of running it (:func:`~.app.create_app`, :func:`~.runner.serve_in_thread`,
:func:`~.runner.run_server`, ``streamkit serve``)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypedDict, cast

from ..errors import UsageError
from ._checks import is_int
from .capacity import check_capacity
from .models import MODELS, SimModel

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "ServerConfig",
    "ServerOptions",
    "checked_config",
    "chosen_config",
    "configured",
]

DEFAULT_MAX_BODY_BYTES = 1 << 20
"""The largest request body accepted by default (1 MiB); larger ones get 413."""


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """How the simulator serves: its address, key, models, limits and capacity model.

    Made once and validated on construction, so every entry point refuses a bad setting with
    the same message. A caller is the bearer token a request carries, or its client address
    when it carries none (:func:`~.asgi.caller_of`).

    Attributes:
        host: the address to bind (loopback by default); :func:`~.runner.run_server` refuses
            anything but loopback without ``api_key``.
        port: the port; 0 picks a free one.
        api_key: if set, every ``/v1`` route requires ``Authorization: Bearer <api_key>``;
            ``/health`` stays open.
        api_key_source: where the key came from (``"STREAMKIT_API_KEY"``, ``"--api-key-file
            PATH"``), named in ``streamkit serve``'s banner; never the key itself.
        models: the models to offer, by id (default :data:`~.models.MODELS`); e.g. a slow
            one: ``{"sim-small": dataclasses.replace(MODELS["sim-small"], ttft=0.5)}``.
        max_concurrent_streams: completions (streamed or not, HTTP or WebSocket) one caller
            may have in progress; more get 429. ``None``: unlimited.
        requests_per_minute: completions one caller may start in any 60 s; more get 429 with
            ``Retry-After``. ``None``: unlimited.
        max_body_bytes: the largest request body (and WebSocket message) accepted (1 MiB by
            default); larger get 413.
        max_batch: capacity model: the most completions generating at once, over every caller
            (vLLM's ``max_num_seqs``); later ones wait in line, first come first served, and
            their time to first token includes the wait. ``None``: no limit.
        decode_capacity: capacity model: decode tokens per second shared by the running batch
            (each stream's gap is at least ``running / decode_capacity``). ``None``: each
            stream keeps its model's rate. See :mod:`.capacity`.
        workers: server processes sharing the port (``SO_REUSEPORT``), each with its own event
            loop, pacer, counters, limits and capacity model; only :func:`~.runner.run_server`
            and ``streamkit serve`` run more than one (see :mod:`.workers`).

    Raises:
        ValueError: no models, a port outside 0-65535, a limit or ``workers`` that is not an
            integer >= 1, or a ``decode_capacity`` that is not a number > 0 (the message names
            the setting).
    """

    host: str = "127.0.0.1"
    port: int = 0
    api_key: str | None = None
    api_key_source: str | None = None
    models: Mapping[str, SimModel] = field(default_factory=lambda: dict(MODELS))
    max_concurrent_streams: int | None = None
    requests_per_minute: int | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_batch: int | None = None
    decode_capacity: float | None = None
    workers: int = 1

    def __post_init__(self) -> None:
        # A copy: the server's offer does not change if the caller's mapping does.
        object.__setattr__(self, "models", dict(self.models))
        if not self.models:
            raise ValueError("the server needs at least one model")
        for name, value in (
            ("max_concurrent_streams", self.max_concurrent_streams),
            ("requests_per_minute", self.requests_per_minute),
            ("max_body_bytes", self.max_body_bytes),
            ("workers", self.workers),
        ):
            if value is not None and (not is_int(value) or value < 1):
                raise ValueError(f"{name} must be an integer >= 1 (got {value!r})")
        check_capacity(self.max_batch, self.decode_capacity)
        if not is_int(self.port) or not 0 <= self.port <= 65535:
            raise ValueError(f"port must be an integer from 0 to 65535 (got {self.port!r})")

    @property
    def capacity_model(self) -> bool:
        """Whether the capacity model is on (``max_batch`` or ``decode_capacity`` set)."""
        return self.max_batch is not None or self.decode_capacity is not None

    def __repr__(self) -> str:
        # Never show the key.
        fields = [
            f"host={self.host!r}",
            f"port={self.port}",
            f"api_key={'<set>' if self.api_key is not None else None}",
            f"models={list(self.models)}",
        ]
        for name in (
            "max_concurrent_streams",
            "requests_per_minute",
            "max_batch",
            "decode_capacity",
        ):
            value = getattr(self, name)
            if value is not None:
                fields.append(f"{name}={value!r}")
        if self.workers != 1:
            fields.append(f"workers={self.workers}")
        if self.max_body_bytes != DEFAULT_MAX_BODY_BYTES:
            fields.append(f"max_body_bytes={self.max_body_bytes}")
        return f"ServerConfig({', '.join(fields)})"


class ServerOptions(TypedDict, total=False):
    """The keyword options of every entry point (:class:`~.app.App`, :func:`~.app.create_app`,
    :func:`~.runner.serve_in_thread`, :func:`~.runner.run_server`), declared once: the
    :class:`ServerConfig` settings of the same names, each optional (``models=None`` means the
    default models)."""

    host: str
    port: int
    api_key: str | None
    api_key_source: str | None
    models: Mapping[str, SimModel] | None
    max_concurrent_streams: int | None
    requests_per_minute: int | None
    max_body_bytes: int
    max_batch: int | None
    decode_capacity: float | None
    workers: int


def chosen_config(
    config: ServerConfig | None, options: ServerConfig, defaults: ServerConfig
) -> ServerConfig:
    """The configuration an entry point runs with: ``config``, or else its keyword options.

    Args:
        config: the ``config=`` argument, if given.
        options: a configuration built from the entry point's keyword arguments.
        defaults: what ``options`` is when no keyword argument is given.

    Raises:
        TypeError: both ``config`` and keyword options were given (which would win is a
            guess, so neither does).
    """
    if config is None:
        return options
    if options != defaults:
        raise TypeError(
            "pass the server's options either as config=ServerConfig(...) or as keyword "
            "arguments, not both"
        )
    return config


def configured(
    config: ServerConfig | None, options: ServerOptions, defaults: ServerConfig | None = None
) -> ServerConfig:
    """The configuration an entry point runs with: ``config``, or else ``defaults`` (a plain
    :class:`ServerConfig` if not given) with the entry point's keyword ``options`` applied.

    Raises:
        ValueError: a setting :class:`ServerConfig` refuses (the message names it).
        TypeError: both ``config`` and keyword options that change the defaults were given,
            or a ``config`` that is not a :class:`ServerConfig` (a setting passed by position).
    """
    if config is not None and not isinstance(config, ServerConfig):
        raise TypeError(
            f"config must be a ServerConfig (got {type(config).__name__}); pass the other "
            "settings by keyword, e.g. api_key=..., port=..."
        )
    defaults = ServerConfig() if defaults is None else defaults
    settings: dict[str, Any] = dict(options)
    if settings.get("models", MODELS) is None:
        del settings["models"]
    return chosen_config(config, replace(defaults, **settings), defaults)


def positional(
    where: str,
    names: tuple[str, ...],
    first: object,
    rest: tuple[Any, ...],
    options: ServerOptions,
) -> ServerConfig | None:
    """The ``config`` an entry point was given, accepting its pre-:class:`ServerConfig` form.

    Before ``ServerConfig``, the first settings of each entry point could be passed by position
    (``create_app("key", models)``, ``serve_in_thread("127.0.0.1", 8001)``). Such a call still
    works, with a :class:`DeprecationWarning`: the values are moved into ``options``.

    Args:
        where: the entry point's name, for the messages.
        names: the settings it took by position, in order.
        first: its first positional argument (a ServerConfig, None, or a legacy setting).
        rest: any further positional arguments.
        options: its keyword settings (updated in place).

    Raises:
        TypeError: too many positional settings, or one given both ways.
    """
    if isinstance(first, ServerConfig) or (first is None and not rest):
        if rest:
            raise TypeError(f"{where}: pass the other settings by keyword after a ServerConfig")
        return first if isinstance(first, ServerConfig) else None
    values = (first, *rest)
    if len(values) > len(names):
        raise TypeError(f"{where} takes at most {len(names)} settings by position: {names}")
    given = names[: len(values)]
    warnings.warn(
        f"{where}: passing {', '.join(given)} by position is deprecated; pass "
        f"{', '.join(f'{n}=' for n in given)} by keyword (or config=ServerConfig(...))",
        DeprecationWarning,
        stacklevel=3,
    )
    settings = cast(dict[str, Any], options)
    for name, value in zip(given, values, strict=True):
        if name in settings:
            raise TypeError(f"{where} got multiple values for {name!r}")
        settings[name] = value
    return None


def checked_config(
    config: ServerConfig | None, options: ServerOptions, defaults: ServerConfig | None = None
) -> ServerConfig:
    """:func:`configured`, a bad setting refused as a usage error.

    For the entry points that face a person (:func:`~.runner.serve_in_thread`,
    :func:`~.runner.run_server`, ``streamkit serve``); the app itself raises ``ValueError``.

    Raises:
        UsageError: a setting :class:`ServerConfig` refuses (the message names it).
        TypeError: both ``config`` and keyword options given.
    """
    try:
        return configured(config, options, defaults)
    except ValueError as exc:
        raise UsageError(f"cannot start the simulator: {exc}") from exc

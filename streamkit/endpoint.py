"""Where a client points: base URL, key and model from arguments, the environment, or the server.

Users arrive with the conventions of the tools they already use, so a :class:`~streamkit.Client`
(and ``streamkit chat`` / ``bench``) resolves each setting with one documented precedence:

============  =========================  =========================  ==========================
setting       1. explicit argument       2. streamkit's variable     3. the openai SDK's
============  =========================  =========================  ==========================
base URL      ``base_url=`` /            ``STREAMKIT_BASE_URL``      ``OPENAI_BASE_URL``
              ``--base-url``
API key       ``api_key=`` / ``--api-key``  ``STREAMKIT_API_KEY``    ``OPENAI_API_KEY``
model         ``model=`` / ``--model``   ``STREAMKIT_MODEL``         (none: asked of the server)
============  =========================  =========================  ==========================

With no base URL anywhere, the client streams from the bundled simulator (the embedded default),
and no key from the environment is sent to it: ``OPENAI_API_KEY`` alone never sends a notebook to
a paid API. With no model anywhere, the client asks the server, as ``vllm bench serve``, GuideLLM
and AIPerf do: ``GET {base_url}/models``; one model is used as is, and with several the first is
used and the choice is logged (``streamkit`` logger, shown on stderr). Errors of that call are the
typed errors of a chat request (:class:`~streamkit.errors.ConnectError`,
:class:`~streamkit.errors.AuthError`, :class:`~streamkit.errors.NotFoundError`…), so the user is
told the real cause: a refused connection, not "no model given".
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ProtocolError, UsageError

__all__ = [
    "ENV_API_KEY",
    "ENV_BASE_URL",
    "ENV_MODEL",
    "Endpoint",
    "ModelInfo",
    "choose_model",
    "list_models",
    "parse_model_list",
    "resolve_endpoint",
]

ENV_BASE_URL = ("STREAMKIT_BASE_URL", "OPENAI_BASE_URL")
"""The variables that name an endpoint, first one set wins."""
ENV_API_KEY = ("STREAMKIT_API_KEY", "OPENAI_API_KEY")
"""The variables that hold an API key, first one set wins."""
ENV_MODEL = ("STREAMKIT_MODEL",)
"""The variables that name a model (the openai SDK has none)."""

log = logging.getLogger("streamkit")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A resolved endpoint.

    Attributes:
        base_url: the API root, or None for the bundled simulator.
        api_key: the key to send, or None.
        model: the model, or None to ask the server.
        base_url_from: where the base URL came from: ``"argument"``, a variable's name, or
            ``"bundled"``.
    """

    base_url: str | None
    api_key: str | None
    model: str | None
    base_url_from: str


def _first(environ: Mapping[str, str], names: tuple[str, ...]) -> tuple[str | None, str | None]:
    for name in names:
        value = environ.get(name, "").strip()
        if value:
            return value, name
    return None, None


def resolve_endpoint(
    base_url: str | None = None,
    api_key: str | None = None,
    model: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> Endpoint:
    """Apply the precedence above: argument > ``STREAMKIT_*`` > ``OPENAI_*`` > the bundled server.

    Args:
        base_url: an explicit API root (wins over the environment).
        api_key: an explicit key.
        model: an explicit model.
        environ: the environment to read (default ``os.environ``).
    """
    env = os.environ if environ is None else environ
    source = "argument"
    if not base_url:
        base_url, source_name = _first(env, ENV_BASE_URL)
        source = source_name or "bundled"
    if not api_key and base_url:  # the bundled server gets no key from the environment
        api_key, _ = _first(env, ENV_API_KEY)
    if not model:
        model, _ = _first(env, ENV_MODEL)
    return Endpoint(base_url or None, api_key or None, model or None, source)


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One entry of ``GET /v1/models``.

    Attributes:
        id: the model id to send.
        owned_by: the ``owned_by`` field, if any.
        pricing: USD per 1M tokens (``input``, ``cached_input``, ``output``) when the server
            publishes it with its unit (the bundled one does, under ``streamkit``), else None.
        raw: the whole entry as the server sent it.
    """

    id: str
    owned_by: str | None = None
    pricing: dict[str, float] | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


def parse_model_list(payload: object, url: str) -> list[ModelInfo]:
    """The models of an OpenAI-style list (``{"data": [{"id": …}, …]}``).

    Raises:
        ProtocolError: the payload is not such a list.
    """
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list):
        raise ProtocolError(
            f"GET {url} did not answer an OpenAI model list ({{'data': [...]}}): "
            "is base_url the API root (…/v1)? Or pass the model explicitly",
            url=url,
        )
    models = []
    for entry in data:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            continue
        # The bundled server publishes its prices beside the OpenAI fields; other servers'
        # pricing fields differ in unit and shape, so only a stated unit is trusted.
        extra = entry.get("streamkit")
        pricing = (
            extra.get("pricing")
            if isinstance(extra, dict) and extra.get("pricing_unit") == "USD per 1M tokens"
            else None
        )
        models.append(
            ModelInfo(
                id=entry["id"],
                owned_by=entry.get("owned_by") if isinstance(entry.get("owned_by"), str) else None,
                pricing=(
                    {k: float(v) for k, v in pricing.items() if isinstance(v, int | float)}
                    if isinstance(pricing, dict)
                    else None
                ),
                raw=entry,
            )
        )
    return models


async def list_models(
    base_url: str, api_key: str | None, *, read_timeout: float = 30.0
) -> list[ModelInfo]:
    """``GET {base_url}/models``: the models the endpoint serves.

    Args:
        base_url: the API root (``…/v1``).
        api_key: sent as ``Authorization: Bearer …`` when given.
        read_timeout: seconds to connect and to wait for the answer.

    Raises:
        StreamkitError: typed as a chat request's would be: ``ConnectError`` when nothing
            answers, ``AuthError`` on 401/403, ``NotFoundError`` on 404 (the hint says to check
            that the URL ends in ``/v1``), ``ProtocolError`` when the answer is not a model list.
    """
    import httpx2

    from .transports._common import error_fields, read_error, status_error

    url = base_url.rstrip("/") + "/models"
    headers = {"Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    try:
        async with httpx2.AsyncClient(timeout=read_timeout) as http:
            response = await http.get(url, headers=headers)
    except httpx2.HTTPError as exc:
        raise read_error(exc, base_url.rstrip("/"), "") from exc
    if response.status_code >= 400:
        message, code = error_fields(response.content, response.reason_phrase or "error")
        if response.status_code == 404:
            # The model list itself is missing: the classic cause is a base URL without /v1.
            root = base_url.rstrip("/")
            guess = "" if root.endswith("/v1") else f": try {root}/v1"
            message = f"{message} (is base_url the API root? It usually ends in /v1{guess})"
            code = "unknown_url"
        raise status_error(response.status_code, message, url=url, code=code)
    try:
        payload = response.json()
    except ValueError as exc:
        raise ProtocolError(
            f"GET {url} answered {response.status_code} "
            f"with {response.headers.get('content-type') or 'no content type'}, not JSON: "
            "is base_url the API root (…/v1)? Or pass the model explicitly",
            url=url,
        ) from exc
    return parse_model_list(payload, url)


def choose_model(models: list[ModelInfo], url: str) -> str:
    """The model to use when none was given: the only one, or the first (logged) of several.

    Raises:
        UsageError: the endpoint lists no model.
    """
    if not models:
        raise UsageError(
            f"no model given, and {url}/models lists none: pass model= "
            "(--model, or set STREAMKIT_MODEL)"
        )
    chosen = models[0].id
    if len(models) > 1:
        names = ", ".join(m.id for m in models[:8]) + (", …" if len(models) > 8 else "")
        log.warning(
            "no model given; %s serves %d models (%s): using %s "
            "(pass model= / --model, or set STREAMKIT_MODEL, to choose)",
            url,
            len(models),
            names,
            chosen,
        )
    return chosen

"""ServerConfig: one validated set of the server's options, taken by every entry point."""

from __future__ import annotations

import dataclasses

import httpx
import pytest

from streamkit.errors import UsageError
from streamkit.server import MODELS, App, ServerConfig, create_app, serve_in_thread


def test_defaults_are_the_entry_points_defaults() -> None:
    config = ServerConfig()
    assert (config.host, config.port, config.api_key) == ("127.0.0.1", 0, None)
    assert config.models == MODELS and config.models is not MODELS
    assert config.max_body_bytes == 1 << 20 and not config.capacity_model


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"models": {}}, "the server needs at least one model"),
        ({"max_concurrent_streams": 0}, "max_concurrent_streams must be"),
        ({"requests_per_minute": 1.5}, "requests_per_minute must be"),
        ({"max_body_bytes": True}, "max_body_bytes must be"),
        ({"max_batch": 0}, "max_batch must be"),
        ({"decode_capacity": -1.0}, "decode_capacity must be"),
        ({"port": 65536}, "port must be"),
    ],
)
def test_a_bad_setting_is_refused_by_name(options: dict[str, object], named: str) -> None:
    with pytest.raises(ValueError, match=f"^{named}"):
        ServerConfig(**options)  # type: ignore[arg-type]


def test_the_models_are_a_copy() -> None:
    models = dict(MODELS)
    config = ServerConfig(models=models)
    models.clear()
    assert list(config.models) == list(MODELS)


def test_repr_never_shows_the_key() -> None:
    text = repr(ServerConfig(api_key="sk-very-secret", max_batch=4))
    assert "sk-very-secret" not in text and "api_key=<set>" in text and "max_batch=4" in text


def test_app_and_create_app_take_a_config() -> None:
    config = ServerConfig(api_key="k", max_concurrent_streams=3, decode_capacity=100.0)
    for app in (App(config), App(config=config), create_app(config=config)):
        assert app.config is config
        assert app.max_concurrent_streams == 3 and app.batch is not None
    assert create_app(max_batch=2).config == ServerConfig(max_batch=2)


def test_config_and_keyword_options_are_not_mixed() -> None:
    config = ServerConfig(max_batch=2)
    with pytest.raises(TypeError, match="not both"):
        create_app(max_batch=3, config=config)
    with pytest.raises(TypeError, match="not both"):
        serve_in_thread(port=0, api_key="k", config=config)


def test_serve_in_thread_serves_the_config() -> None:
    slow = dataclasses.replace(MODELS["sim-small"], id="sim-slow")
    config = ServerConfig(api_key="k", models={"sim-slow": slow})
    with serve_in_thread(config=config) as running:
        assert running.app.config is config and running.api_key == "k"
        headers = {"authorization": "Bearer k"}
        models = httpx.get(running.base_url + "/models", headers=headers).json()
        assert [m["id"] for m in models["data"]] == ["sim-slow"]
        assert httpx.get(running.base_url + "/models").status_code == 401


def test_a_bad_setting_is_a_usage_error_for_the_runners() -> None:
    with pytest.raises(UsageError, match="cannot start the simulator: port must be"):
        serve_in_thread(port=-1)


def test_positional_settings_still_work_with_a_deprecation_warning() -> None:
    with pytest.warns(DeprecationWarning, match=r"passing api_key, models by position"):
        app = create_app("k", {"sim-small": MODELS["sim-small"]})
    assert app.config.api_key == "k" and list(app.config.models) == ["sim-small"]
    with pytest.warns(DeprecationWarning, match=r"App: passing api_key by position"):
        assert App("k").config.api_key == "k"
    with pytest.warns(DeprecationWarning, match=r"passing host, port by position"):
        running = serve_in_thread("127.0.0.1", 0)
    with running:
        assert running.base_url.startswith("http://127.0.0.1:")
    with (
        pytest.raises(TypeError, match="multiple values for 'api_key'"),
        pytest.warns(DeprecationWarning),
    ):
        create_app("k", api_key="other")
